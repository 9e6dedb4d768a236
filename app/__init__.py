"""AvatarCam's application: webcam frames in, an animated avatar out (virtual camera, preview,
recorder), on the networks and motion math of ``engines``. One subpackage per concern, in the
order they may depend on each other (ARCHITECTURE.md has the table; tests/test_layers.py
checks it):

``settings`` (the parameter object), ``cli`` (console, options), ``imaging`` (image files, device
transfers, person masks), ``face`` (landmarks and crop geometry), ``avatar`` (loading and preparing
the avatar), ``compositing`` (paste-back, background, finishing the output), ``animation`` (the
per-frame animator and its frame types), ``live`` (the threaded loop, capture, sinks), ``remote``
(rendering on another machine), ``run`` (where animation runs, headless, the window's session),
``ui`` (the window), ``diagnostics`` (benchmarks and checks)."""
