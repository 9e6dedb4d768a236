"""Options that several entry points share, declared once: the animation settings' flags (from
the fields' metadata) and a render server's token (``--token``, ``--token-file``), with what turns
them, and the engine options (declared in ``engines.options``), into objects."""
from __future__ import annotations

import argparse
from dataclasses import Field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from engines.backend import InferenceBackend
from engines.registry import make_backend
from engines.weights import DownloadProgress

from ..settings import AnimationSettings, BackgroundMode


def _background(text: str) -> BackgroundMode:
    """``--background``: the mode, with an image's file checked now (a typo is one line at start-up)."""
    try:
        return BackgroundMode.parse(text).with_existing_image()
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _flagged_fields() -> list[Field]:
    return [f for f in fields(AnimationSettings) if f.metadata.get("flag")]


def add_settings_arguments(group: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """One option per ``AnimationSettings`` field with a ``flag`` in its metadata, with the field's
    help and default. A boolean's flag switches it away from its default (``--no-stitching``,
    ``--crop-only``); a ``Literal`` field offers its values as choices; the background is parsed as
    it is read. Each option's ``dest`` is its field's name (``settings_from_args`` reads them so)."""
    defaults = AnimationSettings()
    types = AnimationSettings.field_types()
    for f in _flagged_fields():
        default, kind = getattr(defaults, f.name), types[f.name]
        options: dict[str, Any] = {"dest": f.name, "default": default, "help": f.metadata["help"]}
        if kind is bool:
            options["action"] = "store_false" if default else "store_true"
        elif get_origin(kind) is Literal:
            options["choices"] = get_args(kind)
        elif kind is BackgroundMode:
            options["type"] = _background
        elif kind in (int, float):
            options["type"] = kind
        else:
            raise TypeError(f"setting {f.name}: no command-line form for {kind}")
        if f.metadata.get("metavar"):
            options["metavar"] = f.metadata["metavar"]
        group.add_argument(f.metadata["flag"], **options)


def settings_from_args(args: argparse.Namespace) -> AnimationSettings:
    """The settings that ``add_settings_arguments``' options chose (the others at their defaults),
    validated (``ValueError`` naming the field)."""
    return AnimationSettings(**{f.name: getattr(args, f.name) for f in _flagged_fields()}).validated()


def backend_from_args(args: argparse.Namespace, *, weight_set: str = "human",
                      download_progress: DownloadProgress | None = None) -> InferenceBackend:
    """``make_backend`` with main.py's engine options for the networks of ``weight_set`` (an
    avatar kind: ``engines.weights.WEIGHT_SETS``; a weights download reports to ``download_progress``)."""
    return make_backend(args.backend, weights=args.weights, device=args.device, download=not args.no_download,
                        onnx_dir=args.onnx_dir, engine_dir=args.engine_dir, download_progress=download_progress,
                        weight_set=weight_set)


def add_token_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, what: str) -> None:
    """``--token`` (``what`` is its help) or ``--token-file`` (read by ``token_from_args``), not both."""
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--token", help=what)
    token.add_argument("--token-file", metavar="FILE", help="read the token from FILE (keeps it out of `ps`)")


def token_from_args(args: argparse.Namespace) -> str | None:
    """A render server's token from ``--token`` or ``--token-file`` (the file's text, stripped);
    None when neither is given."""
    if not args.token_file:
        return args.token
    path = Path(args.token_file)
    if not path.is_file():
        raise ValueError(f"--token-file: {path} not found")
    return path.read_text().strip()
