"""What a render server's replica runs with, declared once: ``ServerOptions``, the ``args`` of a
Serve config file (``deployment.build_app``), whose defaults are ``main.py serve``'s and the render
service's, and whose fields with a ``flag`` are ``main.py serve``'s options (``add_server_arguments``).
Imports no Ray: ``main.py serve`` reads it before Ray starts."""
from __future__ import annotations

import argparse
import os
from dataclasses import Field, dataclass, field, fields
from typing import Any

from .. import protocol as p

TOKEN_ENV = "AVATARCAM_TOKEN"       # where a replica reads its token when the options carry none


class Secret(str):
    """A string that does not show itself in a repr (deployment options are printed by Ray)."""

    def __repr__(self) -> str:
        return "Secret('***')"


def option(default: Any, *, help: str, flag: str | None = None, metavar: str | None = None) -> Any:
    """A ``ServerOptions`` field: its default, what it does (``help``) and, for the options that
    ``main.py serve`` takes as such, its flag (with ``metavar``, the value's placeholder)."""
    return field(default=default, metadata={"help": help, "flag": flag, "metavar": metavar})


@dataclass(frozen=True)
class ServerOptions:
    """What a replica needs; also the ``args`` of a Serve config file (``build_app``)."""

    weights: str | None = option(None, help="LivePortrait weights directory (None: the default place)")
    backend: str = option("auto", help="the backend, as main.py's --backend")
    device: str = option("auto", help="the torch device, as main.py's --device")
    token: Secret | None = option(None, help=f"the token clients must present (None: ${TOKEN_ENV}, else no check)")
    max_sessions: int = option(8, flag="--max-sessions", metavar="N", help="live sessions at once")
    max_batch: int = option(8, flag="--max-batch", metavar="N",
                            help="frames of different sessions rendered as one batch, at most; 1: no batching")
    idle_timeout_s: float = option(30.0, flag="--idle-timeout", metavar="S",
                                   help="end a session that sends no frame or avatar for S seconds")
    max_fps: float = option(p.Limits.max_fps, help="frames rendered per second per session, at most")
    cpu_threads: int | None = option(None, help="torch's CPU threads in the replica (Ray starts actors with one); "
                                                "None: as Ray sets them")

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> ServerOptions:
        """The options from a config file's ``args`` (or ``main.py serve``'s); ``ValueError`` naming
        any unknown one. The token, when not among them, comes from ``$AVATARCAM_TOKEN``."""
        known = {f.name for f in fields(cls)}
        unknown = set(args) - known
        if unknown:
            raise ValueError(f"render server: unknown option(s) {', '.join(sorted(unknown))}")
        token = args.get("token") or os.environ.get(TOKEN_ENV)
        return cls(**{**args, "token": Secret(token) if token else None})


DEFAULTS = ServerOptions()


def _flagged() -> list[Field]:
    return [f for f in fields(ServerOptions) if f.metadata["flag"]]


def add_server_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """One option per ``ServerOptions`` field with a flag, with its help and default; each option's
    ``dest`` is its field's name (``server_args`` reads them so)."""
    for f in _flagged():
        default = getattr(DEFAULTS, f.name)
        parser.add_argument(f.metadata["flag"], dest=f.name, type=type(default), default=default,
                            metavar=f.metadata["metavar"], help=f"{f.metadata['help']} (default {default:g})")


def server_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ``ServerOptions`` values that ``add_server_arguments``' options chose, by field name."""
    return {f.name: getattr(args, f.name) for f in _flagged()}
