"""What a render server's replica runs with, declared once: ``ServerOptions``, the ``args`` of a
Serve config file (``deployment.build_app``), whose defaults are ``main.py serve``'s and the render
service's, and whose fields with a ``flag`` are ``main.py serve``'s options (``add_server_arguments``).
Imports no Ray: ``main.py serve`` reads it before Ray starts.

It also holds the access rule, once for every way the server starts: a server that is not bound
to loopback only needs a token of at least ``MIN_TOKEN_LENGTH`` characters (``check_access``);
without one the application refuses to build, so a cluster deployment fails closed."""
from __future__ import annotations

import argparse
import ipaddress
import os
from dataclasses import Field, dataclass, field, fields
from typing import Any

from ...avatar.framing import AvatarKind, check_avatar_kind
from .. import protocol as p

TOKEN_ENV = "AVATARCAM_TOKEN"       # read where the application is built, when the options carry no token
MIN_TOKEN_LENGTH = 16
_TOKEN_HINT = "e.g. `python -c \"import secrets; print(secrets.token_urlsafe(24))\"`"


def check_token(token: str | None, where: str = "the token") -> str | None:
    """``token`` (None stays None); ``ValueError`` naming ``where`` when it is too short."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"{where} must have at least {MIN_TOKEN_LENGTH} characters ({_TOKEN_HINT})")
    return token


def read_token_file(path: str) -> str:
    """The token in the file at ``path`` (its text, stripped), checked; ``ValueError`` in one line."""
    try:
        text = open(path, encoding="utf-8").read().strip()
    except OSError as e:
        raise ValueError(f"token_file {path}: {e.strerror or e}") from None
    return check_token(text, f"the token in {path}") or ""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    token: Secret | None = option(None, help=f"the token clients must present (None: ${TOKEN_ENV} where the "
                                             "application is built, baked into the replicas' arguments)")
    token_file: str | None = option(None, help="a file holding the token, on every node, read by each replica "
                                               f"at its start (instead of token or ${TOKEN_ENV})")
    loopback_only: bool = option(False, help="Serve's proxies listen on loopback only: no token needed "
                                             "(main.py serve on 127.0.0.1); refused where they listen elsewhere")
    max_sessions: int = option(8, flag="--max-sessions", metavar="N", help="live sessions at once")
    max_batch: int = option(8, flag="--max-batch", metavar="N",
                            help="frames of different sessions rendered as one batch, at most; 1: no batching")
    idle_timeout_s: float = option(30.0, flag="--idle-timeout", metavar="S",
                                   help="end a session that sends no frame or avatar for S seconds")
    max_fps: float = option(p.Limits.max_fps, help="frames rendered per second per session, at most")
    cpu_threads: int | None = option(None, help="torch's CPU threads in the replica (Ray starts actors with one); "
                                                "None: as Ray sets them")
    preload: tuple[AvatarKind, ...] = option(("human",), help="the weight sets (avatar kinds: human, animal) a "
                                                              "replica loads at its start; any other loads when a "
                                                              "session first needs it. Each is a full copy of "
                                                              "F, M, W and G in the replica's memory")
    download: bool = option(False, help="a replica may download a weight set missing from weights (main.py serve "
                                         "without --no-download); on a cluster, place the weights on the nodes")

    def __post_init__(self) -> None:
        # a config file's list (YAML) becomes a tuple; an unknown kind is one line at the build
        if isinstance(self.preload, str) or not isinstance(self.preload, (list, tuple)):
            raise ValueError(f"render server: preload: expected a list of avatar kinds, got {self.preload!r}")
        try:
            kinds = tuple(dict.fromkeys(check_avatar_kind(k) for k in self.preload))
        except ValueError as e:
            raise ValueError(f"render server: preload: {e}") from None
        object.__setattr__(self, "preload", kinds)

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> ServerOptions:
        """The options from a config file's ``args`` (or ``main.py serve``'s); ``ValueError`` naming
        any unknown one. The token, when not among them, comes from ``$AVATARCAM_TOKEN``."""
        known = {f.name for f in fields(cls)}
        unknown = set(args) - known
        if unknown:
            raise ValueError(f"render server: unknown option(s) {', '.join(sorted(unknown))}")
        # a token_file is read by the replicas themselves: the environment's token is not baked in beside it
        token = args.get("token") or (None if args.get("token_file") else os.environ.get(TOKEN_ENV))
        return cls(**{**args, "token": Secret(token) if token else None})

    def check_access(self) -> None:
        """Fail closed: ``ValueError`` (one line) unless clients must present a token of at least
        ``MIN_TOKEN_LENGTH`` characters, or the server is bound to loopback only. Reads
        ``token_file`` when given (the file must be on every node, this one included)."""
        if self.token_file:
            read_token_file(self.token_file)
            return
        check_token(self.token, f"the token (${TOKEN_ENV})")
        if self.token is None and not self.loopback_only:
            raise ValueError(f"render server: no token, refusing to serve: set {TOKEN_ENV} (at least "
                             f"{MIN_TOKEN_LENGTH} characters) on every node before `ray start`, or give the "
                             "token_file option; only loopback_only: true (proxies on 127.0.0.1) goes without")

    def replica_token(self) -> Secret | None:
        """The token a replica checks: ``token_file``'s content, read now, when given; else ``token``."""
        if self.token_file:
            return Secret(read_token_file(self.token_file))
        return self.token


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
