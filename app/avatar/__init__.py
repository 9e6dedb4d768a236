"""The avatar: its face found, cropped and measured (``face``), prepared through the networks
(``prepared``), and loaded from a file (``loading``)."""
