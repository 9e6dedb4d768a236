"""Where the live session's animation stage runs: on this computer (``LocalRenderer``: an
``Animator`` on an inference backend) or on a render server (``RemoteRenderer``: a
``RemoteAnimator``; no weights and no networks here). Capture, tracking, paste-back, preview and
virtual camera stay local either way.

A renderer makes its animator (connected, for a server) and turns an avatar file, or the face of
an avatar prepared for another renderer, into what that animator's ``set_avatar`` takes: its own
kind of ``AnimatedAvatar`` (which has the ``AvatarFace`` as ``.face``). ``RenderChoice`` is the
user's choice as the window and its settings hold it.

Avatar kinds: a local animator runs on the backend of its avatar's kind (the human or the animal
weight set), so an avatar of another kind needs a new animator (``needs_new_animator``), and the
window's ``RendererFactory`` keeps only the active kind's networks: making one kind's backend
closes the other's first. A render server is told the kind with the avatar and needs nothing
new."""
from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Callable
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
from ..avatar.framing import AvatarChoice, AvatarKind
from ..avatar.loading import load_avatar, load_avatar_face
from ..avatar.prepared import PreparedAvatar, prepare_avatar
from ..avatar.prepared_video import prepare_video
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

    def load_avatar(self, choice: AvatarChoice) -> AvatarT:
        """Avatar file with its kind and box -> what ``animator``'s ``set_avatar`` takes (raises
        ImageError / NoFaceError; a local renderer also WeightsError / CheckpointError when the
        networks of the avatar's kind are loaded for it)."""
        ...

    def adopt(self, face: AvatarFace) -> AvatarT:
        """An avatar face already cropped (e.g. for the other renderer) -> the same as ``load_avatar``."""
        ...

    def animator(self, settings: LiveSettings, avatar: AvatarT) -> FrameAnimator[AvatarT]:
        """The animator for ``avatar``, ready for its first frame (``RemoteError`` for a server that
        cannot be used)."""
        ...

    def needs_new_animator(self, current: AvatarFace, kind: AvatarKind) -> bool:
        """Whether an avatar of ``kind`` needs a new animator instead of the one animating
        ``current``: then its preparation may close the networks the current animator uses, so
        the caller stops the loop before preparing it (``adopt``) and makes its animator."""
        ...


# the backend holding the networks of an avatar kind
BackendProvider = Callable[[AvatarKind], InferenceBackend]


class LocalRenderer:
    """Animating on this computer: on ``backend`` for every avatar kind (tests, the headless run's
    own backend), or on the backend of each avatar's kind that ``backend_for`` gives (the window's
    ``RendererFactory.backend``, which keeps one kind's networks loaded at a time)."""

    remote = False
    where = "this computer"

    def __init__(self, backend: InferenceBackend | None = None, *,
                 backend_for: BackendProvider | None = None) -> None:
        if (backend is None) == (backend_for is None):
            raise TypeError("LocalRenderer: give either a backend or backend_for")
        if backend is not None:
            fixed = backend

            def backend_for(kind: AvatarKind) -> InferenceBackend:
                return fixed
        assert backend_for is not None
        self._backend_for: BackendProvider = backend_for

    def backend(self, kind: AvatarKind) -> InferenceBackend:
        """The backend that animates avatars of ``kind`` (made on first need by ``backend_for``)."""
        return self._backend_for(kind)

    def load_avatar(self, choice: AvatarChoice) -> PreparedAvatar:
        return load_avatar(choice, self.backend(choice.kind))

    def adopt(self, face: AvatarFace) -> PreparedAvatar:
        if face.video is not None:          # a video avatar's frame: the whole clip is prepared
            return prepare_video(face.video, self.backend(face.kind))
        with torch.inference_mode():
            return prepare_avatar(face, self.backend(face.kind))

    def animator(self, settings: LiveSettings, avatar: PreparedAvatar) -> Animator:
        return Animator(self.backend(avatar.kind), settings, avatar)

    def needs_new_animator(self, current: AvatarFace, kind: AvatarKind) -> bool:
        """An ``Animator`` holds one backend, of one kind's networks."""
        return kind != current.kind


class RemoteRenderer:
    """Animating on the render server ``server``; the avatar is cropped and segmented here and
    uploaded at each (re)connection."""

    remote = True

    def __init__(self, server: RemoteServer) -> None:
        self.server = server
        self.where = server.url

    def load_avatar(self, choice: AvatarChoice) -> RemoteAvatar:
        return self.adopt(load_avatar_face(choice))

    def adopt(self, face: AvatarFace) -> RemoteAvatar:
        from ..remote.client import RemoteAvatar

        # a group's faces and a video's clip travel with the face (``others``, ``video``)
        return RemoteAvatar(face)

    def animator(self, settings: LiveSettings, avatar: RemoteAvatar) -> RemoteAnimator:
        from ..remote.client import RemoteAnimator

        animator = RemoteAnimator(self.server, settings, avatar)
        try:
            animator.connect()
        except BaseException:
            animator.close()
            raise
        return animator

    def needs_new_animator(self, current: AvatarFace, kind: AvatarKind) -> bool:
        """The server is told the kind with each avatar upload."""
        return False


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
    ``args``. Its local renderers get their backends from ``backend``: one per avatar kind (weight
    set), made on first need (a weights download then reports to ``download_progress``, on the
    thread that asked), and only one at a time, so only the active kind's networks stay loaded."""

    def __init__(self, args: argparse.Namespace, download_progress: DownloadProgress | None = None) -> None:
        self.args = args
        self.download_progress = download_progress
        self._backends: dict[AvatarKind, InferenceBackend] = {}      # at most one: the active kind's
        self._lock = threading.Lock()       # the window's worker threads ask in turn

    def __call__(self, choice: RenderChoice) -> Renderer:
        if choice.remote:
            return RemoteRenderer(choice.server(frame_format=self.args.remote_format, ca_file=self.args.remote_ca))
        return LocalRenderer(backend_for=self.backend)

    def backend(self, kind: AvatarKind) -> InferenceBackend:
        """The backend with the networks of ``kind``: the one made before if it is of ``kind``;
        else the other kind's is closed first (its animator must be stopped: the caller's
        business, see ``Renderer.needs_new_animator``) and this kind's made."""
        with self._lock:
            backend = self._backends.get(kind)
            if backend is not None:
                return backend
            for other in list(self._backends):
                log.info("closing the %s networks for the %s ones", other, kind)
                self._backends.pop(other).close()
            backend = backend_from_args(self.args, weight_set=kind, download_progress=self.download_progress)
            self._backends[kind] = backend
            return backend

    def close(self) -> None:
        """Close the backend (the window's shutdown, once its session is closed). The backend
        outlives renderer switches: switching back to this computer reuses it."""
        with self._lock:
            backends, self._backends = list(self._backends.values()), {}
        for backend in backends:
            backend.close()
