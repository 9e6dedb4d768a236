"""Options that several entry points share, declared once: the engine (``--weights``,
``--device``, ``--backend``, ``--no-download``) and a render server's token (``--token``,
``--token-file``), with what turns them into objects."""
from __future__ import annotations

import argparse
from pathlib import Path

from engines.backend import InferenceBackend
from engines.registry import make_backend


def backend_from_args(args: argparse.Namespace) -> InferenceBackend:
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
