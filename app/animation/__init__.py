"""Per-frame animation: the frame types and the ``FrameAnimator`` interface (``frames``), the local
``Animator`` and its parts (driver motion and smoothing, retargeting, the face-lost state)."""
