"""The engine's command-line options, declared once for every entry point that loads or times the
networks (main.py and ``main.py serve``, the benchmarks, the exporters): ``--weights``,
``--device``, ``--backend`` and, where they apply, ``--no-download``, ``--onnx-dir``,
``--engine-dir`` and ``--weight-set`` (the exporters and benchmarks; the app picks the set from
the avatar's kind). Only their spelling, choices and help live here; what the values mean is
``engines.registry.make_backend``'s (and ``engines.weights``' for the weights directory)."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .device import DEVICE_CHOICES
from .select import BACKEND_KINDS
from .weights import WEIGHT_SETS, WEIGHTS_ENV

# where the weights are looked for when --weights is not given (engines.weights.resolve_weights_dir)
WEIGHTS_DEFAULT = f"${WEIGHTS_ENV}, else the per-user cache"
BACKEND_HELP = ("auto: the fastest installed and validated; torch; onnxruntime; tensorrt; "
                "stub: no networks, for testing the loop")


def add_engine_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *,
                         backend: str | None = "auto", device: str | None = "auto",
                         weights: str | None = WEIGHTS_DEFAULT, download: bool = False,
                         onnx_dir: str | None = None, engine_dir: bool = False, weight_set: bool = False,
                         path_type: Callable[[str], Any] = str) -> None:
    """Declare the engine options on ``parser`` (a parser or an argument group).

    ``backend`` / ``device``: the default of ``--backend`` / ``--device`` (None: no such option);
    ``weights``: what ``--weights`` defaults to, in words, for its help (None: it is required);
    ``download``: add ``--no-download``; ``onnx_dir``: add ``--onnx-dir``, with this note on what
    it is for; ``engine_dir``: add ``--engine-dir``; ``weight_set``: add ``--weight-set`` (a key of
    ``engines.weights.WEIGHT_SETS``, default ``human``); ``path_type``: how the directories are read
    (``str``, or ``pathlib.Path`` for code that wants paths). Values keep their option's name
    (``args.weights``, ``args.no_download``, ``args.onnx_dir``, ``args.weight_set``, ...)."""
    parser.add_argument("--weights", metavar="DIR", type=path_type, required=weights is None,
                        help="LivePortrait weights directory" + (f" (default: {weights})" if weights else ""))
    if device is not None:
        parser.add_argument("--device", choices=DEVICE_CHOICES, default=device,
                            help=f"torch device (default: {device})")
    if backend is not None:
        parser.add_argument("--backend", choices=BACKEND_KINDS, default=backend,
                            help=f"{BACKEND_HELP} (default: {backend})")
    if onnx_dir is not None:
        parser.add_argument("--onnx-dir", metavar="DIR", type=path_type,
                            help=f"graphs from `python -m export onnx` ({onnx_dir})")
    if engine_dir:
        parser.add_argument("--engine-dir", metavar="DIR", type=path_type,
                            help="engines from `python -m export tensorrt` (tensorrt backend)")
    if weight_set:
        parser.add_argument("--weight-set", choices=tuple(WEIGHT_SETS), default="human",
                            help="which networks: human, or animal (the animal F, M, W, G with the human "
                                 "stitching file); another set's graphs and engines go to DIR/<set> of "
                                 "the folder given (default: human)")
    if download:
        parser.add_argument("--no-download", action="store_true", help="never download missing weights")
