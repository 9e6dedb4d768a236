"""Running the app: where the animation runs (``renderer``: this computer or a render server), the
headless runner and the window's live session."""
