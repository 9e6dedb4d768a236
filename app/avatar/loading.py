"""Building the pieces of a live session (backend, avatar) from user choices; shared by the
headless runner and the desktop app."""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from engines.backend import InferenceBackend, StubBackend, TorchBackend
from engines.backend_onnx import OnnxRuntimeBackend
from engines.backend_tensorrt import TensorRTBackend
from engines.checkpoints import load_networks
from engines.device import resolve_device
from engines.select import choose_backend, default_engine_dir, default_onnx_dir, machine_facts
from engines.weights import ensure_weights, resolve_weights_dir

from ..face.tracker import LandmarkSource, MediaPipeFaceMesh
from ..imaging.segmentation import MediaPipeSelfieSegmentation, PersonSegmenter
from .face import AvatarFace, prepare_avatar_face
from .prepared import PreparedAvatar, prepare_avatar

if TYPE_CHECKING:
    from ..remote.client import RemoteServer

log = logging.getLogger(__name__)


DEFAULT_AVATAR = Path(__file__).resolve().parents[2] / "assets" / "avatars" / "astronaut.png"


def make_backend(kind: str = "auto", *, weights: str | Path | None = None, device: str = "auto",
                 download: bool = True, onnx_dir: str | Path | None = None,
                 engine_dir: str | Path | None = None) -> InferenceBackend:
    """The backend the user asked for (``auto``: the fastest installed and validated one, see
    ``engines.select``); ``stub`` runs no networks (tests, benchmarks)."""
    resolve_device(device)                       # a clear error for --device cuda without a GPU
    engine_dir = Path(engine_dir) if engine_dir else default_engine_dir()
    onnx_dir = Path(onnx_dir) if onnx_dir else default_onnx_dir()
    weights_dir = None if kind == "stub" else ensure_weights(resolve_weights_dir(weights), download=download)
    facts = machine_facts(engine_dir, onnx_dir, weights_dir, requested=kind, device=device)
    choice = choose_backend(kind, device, facts)
    if choice.kind == "onnxruntime" and not facts.onnx_verified:
        raise ValueError(f"{onnx_dir}: no ONNX graphs verified for the weights in {weights_dir}; make them with "
                         f"`python -m export onnx --weights {weights_dir} --out {onnx_dir}`")
    log.info("backend: %s on %s (%s): %s", choice.kind, choice.device, choice.precision, choice.reason)
    if choice.kind == "stub":
        return StubBackend(choice.device)
    t0 = time.perf_counter()
    if choice.kind == "onnxruntime":
        backend: InferenceBackend = OnnxRuntimeBackend(onnx_dir, device=choice.device, precision=choice.precision)
    elif choice.kind == "tensorrt":
        # the PyTorch networks check every engine at start and stand in for any that fails
        backend = TensorRTBackend(engine_dir, choice.device, fallback=load_networks(weights_dir), validate=True)
    else:
        backend = TorchBackend(load_networks(weights_dir), choice.device, precision=choice.precision)
    log.info("networks ready (%s) in %.1f s", backend.name, time.perf_counter() - t0)
    return backend


def make_backend_from_args(args: argparse.Namespace) -> InferenceBackend:
    """``make_backend`` with main.py's engine options."""
    return make_backend(args.backend, weights=args.weights, device=args.device, download=not args.no_download,
                        onnx_dir=args.onnx_dir, engine_dir=args.engine_dir)


def token_from_args(args: argparse.Namespace) -> str | None:
    """A render server's token from ``--token`` or ``--token-file`` (the file's text, stripped);
    None when neither is given."""
    if not args.token_file:
        return args.token
    path = Path(args.token_file)
    if not path.is_file():
        raise ValueError(f"--token-file: {path} not found")
    return path.read_text().strip()


def remote_server_from_args(args: argparse.Namespace) -> RemoteServer:
    """The render server of ``--remote``, ``--token`` / ``--token-file``, ``--remote-format`` and
    ``--remote-ca``."""
    from ..remote.client import RemoteServer

    token = token_from_args(args)
    if args.remote_ca and not Path(args.remote_ca).is_file():
        raise ValueError(f"--remote-ca: {args.remote_ca} not found")
    return RemoteServer.parse(args.remote, token, frame_format=args.remote_format, ca_file=args.remote_ca)


def person_segmenter() -> PersonSegmenter | None:
    """MediaPipe's person segmenter, or None where MediaPipe is not installed (landmarks replayed on
    a GPU machine): the background compositor then segments the avatar itself when a mode needs it."""
    try:
        return MediaPipeSelfieSegmentation()
    except ImportError as e:
        log.info("no person segmentation at avatar preparation (%s)", e)
        return None


def load_avatar_face(path: str | Path, source: LandmarkSource | None = None) -> AvatarFace:
    """Avatar file -> its face, cropped and segmented (raises ImageError / NoFaceError): all a
    client of a render server prepares itself (no networks)."""
    own = source is None
    source = source or MediaPipeFaceMesh()
    segmenter = person_segmenter()
    try:
        return prepare_avatar_face(path, source, segmenter=segmenter)
    finally:
        if segmenter is not None:
            segmenter.close()
        if own:
            source.close()


def load_avatar(path: str | Path, backend: InferenceBackend, source: LandmarkSource | None = None) -> PreparedAvatar:
    """Avatar file -> everything the animator needs (raises ImageError / NoFaceError); the image
    is segmented here too, once, for the output background modes."""
    t0 = time.perf_counter()
    face = load_avatar_face(path, source)
    with torch.inference_mode():
        avatar = prepare_avatar(face, backend)
    log.info("avatar %s prepared in %.2f s (%dx%d)", path, time.perf_counter() - t0,
             face.image.shape[1], face.image.shape[0])
    return avatar
