"""Building the pieces of a live session (backend, avatar) from user choices; shared by the
headless runner and the desktop app."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from engines.backend import InferenceBackend, StubBackend, TorchBackend
from engines.checkpoints import load_networks
from engines.device import resolve_device
from engines.weights import ensure_weights, resolve_weights_dir

from .animator import PreparedAvatar, prepare_avatar
from .face.avatar import prepare_avatar_face
from .face.tracker import LandmarkSource, MediaPipeFaceMesh

log = logging.getLogger(__name__)

BACKEND_CHOICES = ("torch", "stub")
DEFAULT_AVATAR = Path(__file__).resolve().parents[1] / "assets" / "avatars" / "astronaut.png"


def make_backend(kind: str = "torch", *, weights: str | Path | None = None, device: str = "auto",
                 download: bool = True) -> InferenceBackend:
    """``torch``: our networks from the official checkpoints; ``stub``: no networks (tests, benchmarks)."""
    dev = resolve_device(device)
    if kind == "stub":
        return StubBackend(dev)
    if kind != "torch":
        raise ValueError(f"unknown backend {kind!r}; expected one of {', '.join(BACKEND_CHOICES)}")
    weights_dir = ensure_weights(resolve_weights_dir(weights), download=download)
    t0 = time.perf_counter()
    backend = TorchBackend(load_networks(weights_dir), dev)
    log.info("networks loaded from %s on %s in %.1f s", weights_dir, dev, time.perf_counter() - t0)
    return backend


def load_avatar(path: str | Path, backend: InferenceBackend, source: LandmarkSource | None = None) -> PreparedAvatar:
    """Avatar file -> everything the animator needs (raises ImageError / NoFaceError)."""
    own = source is None
    source = source or MediaPipeFaceMesh()
    try:
        t0 = time.perf_counter()
        face = prepare_avatar_face(path, source)
        with torch.inference_mode():
            avatar = prepare_avatar(face, backend)
        log.info("avatar %s prepared in %.2f s (%dx%d)", path, time.perf_counter() - t0,
                 face.image.shape[1], face.image.shape[0])
        return avatar
    finally:
        if own:
            source.close()
