"""Where the live session's animation stage runs: on this computer (``LocalRenderer``: an
``Animator`` on an inference backend) or on a render server (``RemoteRenderer``: a
``RemoteAnimator``; no weights and no networks here). Capture, tracking, paste-back, preview and
virtual camera stay local either way.

A renderer makes its animator (connected, for a server) and turns an avatar file, or the face of
an avatar prepared for another renderer, into what that animator's ``set_avatar`` takes: its own
kind of ``AnimatedAvatar`` (which has the ``AvatarFace`` as ``.face``). ``RenderChoice`` is the
user's choice as the window and its settings hold it."""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from engines.backend import InferenceBackend
from engines.weights import DownloadProgress

from ..animation.animator import Animator
from ..animation.frames import AvatarT, FrameAnimator
from ..avatar.face import AvatarFace
from ..avatar.loading import load_avatar, load_avatar_face
from ..avatar.prepared import PreparedAvatar, prepare_avatar
from ..cli.options import backend_from_args, token_from_args
from ..settings import LiveSettings

if TYPE_CHECKING:
    from ..remote.client import RemoteAnimator, RemoteAvatar, RemoteServer

log = logging.getLogger(__name__)


class Renderer(Protocol[AvatarT]):
    """``AvatarT``: the avatars this renderer prepares and its animators take (``PreparedAvatar``
    on this computer, ``RemoteAvatar`` on a server)."""

    remote: bool
    where: str                  # for the window: "this computer" or the server's address

    def load_avatar(self, path: str | Path) -> AvatarT:
        """Avatar file -> what ``animator``'s ``set_avatar`` takes (raises ImageError / NoFaceError)."""
        ...

    def adopt(self, face: AvatarFace) -> AvatarT:
        """An avatar face already cropped (e.g. for the other renderer) -> the same as ``load_avatar``."""
        ...

    def animator(self, settings: LiveSettings, avatar: AvatarT) -> FrameAnimator[AvatarT]:
        """The animator for ``avatar``, ready for its first frame (``RemoteError`` for a server that
        cannot be used)."""
        ...


class LocalRenderer:
    """Animating on this computer's ``backend``."""

    remote = False
    where = "this computer"

    def __init__(self, backend: InferenceBackend) -> None:
        self.backend = backend

    def load_avatar(self, path: str | Path) -> PreparedAvatar:
        return load_avatar(path, self.backend)

    def adopt(self, face: AvatarFace) -> PreparedAvatar:
        with torch.inference_mode():
            return prepare_avatar(face, self.backend)

    def animator(self, settings: LiveSettings, avatar: PreparedAvatar) -> Animator:
        return Animator(self.backend, settings, avatar)


class RemoteRenderer:
    """Animating on the render server ``server``; the avatar is cropped and segmented here and
    uploaded at each (re)connection."""

    remote = True

    def __init__(self, server: RemoteServer) -> None:
        self.server = server
        self.where = server.url

    def load_avatar(self, path: str | Path) -> RemoteAvatar:
        return self.adopt(load_avatar_face(path))

    def adopt(self, face: AvatarFace) -> RemoteAvatar:
        from ..remote.client import RemoteAvatar

        return RemoteAvatar(face)

    def animator(self, settings: LiveSettings, avatar: RemoteAvatar) -> RemoteAnimator:
        from ..remote.client import RemoteAnimator

        animator = RemoteAnimator(self.server, settings, avatar.face)
        try:
            animator.connect()
        except BaseException:
            animator.close()
            raise
        return animator


class RenderTarget(StrEnum):
    LOCAL = "local"
    SERVER = "server"


@dataclass(frozen=True)
class RenderChoice:
    """"Render on: this computer / a server" with the server's address (``ws://`` or ``wss://``)
    and token; the token never appears in the repr."""

    target: RenderTarget = RenderTarget.LOCAL
    url: str = ""
    token: str = field(default="", repr=False)

    @property
    def remote(self) -> bool:
        return self.target is RenderTarget.SERVER

    def server(self, **options: Any) -> RemoteServer:
        """The server to render on (``RemoteServer.parse``'s options); ``RemoteError`` with one
        line for an unusable address."""
        from ..remote.client import RemoteError, RemoteServer

        try:
            return RemoteServer.parse(self.url, self.token or None, **options)
        except RemoteError:
            raise RemoteError(f"server address: expected ws://HOST:PORT or wss://HOST:PORT, got {self.url!r}") from None


if TYPE_CHECKING:
    # the type checker holds each renderer to the protocol with its own avatars, and so its
    # animators (Animator, RemoteAnimator) to FrameAnimator of those avatars
    _LOCAL: type[Renderer[PreparedAvatar]] = LocalRenderer
    _REMOTE: type[Renderer[RemoteAvatar]] = RemoteRenderer


def remote_server_from_args(args: argparse.Namespace) -> RemoteServer:
    """The render server of ``--remote``, ``--token`` / ``--token-file``, ``--remote-format`` and
    ``--remote-ca``."""
    from ..remote.client import RemoteServer

    token = token_from_args(args)
    if args.remote_ca and not Path(args.remote_ca).is_file():
        raise ValueError(f"--remote-ca: {args.remote_ca} not found")
    return RemoteServer.parse(args.remote, token, frame_format=args.remote_format, ca_file=args.remote_ca)


class RendererFactory:
    """The renderer of a "Render on" choice, with the engine and ``--remote-*`` options of
    ``args``; the backend is made once, on first need (a weights download then reports to
    ``download_progress``, on the thread that asked)."""

    def __init__(self, args: argparse.Namespace, download_progress: DownloadProgress | None = None) -> None:
        self.args = args
        self.download_progress = download_progress
        self._backend: InferenceBackend | None = None

    def __call__(self, choice: RenderChoice) -> Renderer:
        if choice.remote:
            return RemoteRenderer(choice.server(frame_format=self.args.remote_format, ca_file=self.args.remote_ca))
        if self._backend is None:
            self._backend = backend_from_args(self.args, download_progress=self.download_progress)
        return LocalRenderer(self._backend)

    def close(self) -> None:
        """Close the backend (the window's shutdown, once its session is closed). The backend
        outlives renderer switches: switching back to this computer reuses it."""
        backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()
