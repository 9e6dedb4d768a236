"""A render server's backends, one per weight set: the human networks animate human avatars (and
boxed cartoons), the animal ones animals (``app.avatar.framing.AVATAR_KINDS``). Each set is a full
copy of F, M, W and G on the replica's device, so a set is loaded only when a session first needs
it (or at the start, for the sets named in ``ServerOptions.preload``) and kept until the replica
stops. Imports no Ray: the tests' plain server uses it as the deployment does."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from engines.backend import InferenceBackend

from ...avatar.framing import AVATAR_KINDS, AvatarKind
from .options import ServerOptions

log = logging.getLogger(__name__)


class WeightSetError(ValueError):
    """A weight set that cannot be loaded on this server (missing files, no memory); the message
    is one line, and ends only the session that asked for the set."""


class WeightSets:
    """The backends of one replica by avatar kind, each made by ``load(kind)`` on first use, once,
    whichever sessions ask at the same time. ``share(kind, backend)`` is what a session gets of a
    loaded backend (the deployment's: one that batches W+G with the other sessions of that set);
    the loaded backends themselves are the replica's, closed by ``close``.

    ``get`` blocks while its set loads: call it off the event loop (the sessions' worker threads).
    """

    def __init__(self, load: Callable[[AvatarKind], InferenceBackend], *,
                 share: Callable[[AvatarKind, InferenceBackend], InferenceBackend] | None = None) -> None:
        self._load = load
        self._share = share or (lambda kind, backend: backend)
        self._backends: dict[AvatarKind, InferenceBackend] = {}
        self._shared: dict[AvatarKind, InferenceBackend] = {}
        self._locks = {kind: threading.Lock() for kind in AVATAR_KINDS}
        self._closed = False

    @classmethod
    def of(cls, backend: InferenceBackend) -> WeightSets:
        """Every kind animated by the one ``backend``, loaded already (the stub, which has no
        weights; tests)."""
        sets = cls(lambda kind: backend)
        sets._backends = dict.fromkeys(AVATAR_KINDS, backend)
        sets._shared = dict(sets._backends)
        return sets

    @property
    def loaded(self) -> list[AvatarKind]:
        """The kinds whose set is loaded, in ``AVATAR_KINDS`` order."""
        return [kind for kind in AVATAR_KINDS if kind in self._backends]

    @property
    def first(self) -> InferenceBackend | None:
        """A loaded backend (the first kind's), for what health says of the backend; None before any."""
        loaded = self.loaded
        return self._backends[loaded[0]] if loaded else None

    def backend(self, kind: AvatarKind) -> InferenceBackend:
        """The loaded backend of ``kind`` itself (what a batch renders on); ``KeyError`` when not loaded."""
        return self._backends[kind]

    def get(self, kind: AvatarKind) -> InferenceBackend:
        """The backend a session animates ``kind`` avatars on, loaded now when it is not yet;
        ``WeightSetError`` (one line) when it cannot be."""
        shared = self._shared.get(kind)
        if shared is not None:
            return shared
        with self._locks[kind]:             # a second session waits for the first's load
            if kind not in self._shared:
                if self._closed:
                    raise WeightSetError("server stopping")
                t0 = time.perf_counter()
                try:
                    backend = self._load(kind)
                except (ValueError, OSError, RuntimeError) as e:   # WeightsError, CheckpointError, out of memory
                    log.warning("%s weight set not loaded: %s", kind, e)
                    raise WeightSetError(f"cannot animate {kind} avatars on this server: "
                                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
                self._backends[kind] = backend
                self._shared[kind] = self._share(kind, backend)
                log.info("%s weight set loaded in %.1f s (%s on %s; loaded: %s)", kind, time.perf_counter() - t0,
                         backend.name, backend.device, ", ".join(self.loaded))
            return self._shared[kind]

    def close(self) -> None:
        """Close every loaded backend (each once, though several kinds may share one)."""
        self._closed = True
        backends = list({id(b): b for b in self._backends.values()}.values())
        self._backends.clear()
        self._shared.clear()
        for backend in backends:
            backend.close()


def load_weight_set(options: ServerOptions, kind: AvatarKind) -> InferenceBackend:
    """The replica's backend for ``kind``'s weight set, as ``options`` say (``make_backend`` with
    ``weight_set=kind``; downloads only with ``options.download``)."""
    from engines.registry import make_backend  # loads the networks: in the replica only

    return make_backend(options.backend, weights=options.weights, device=options.device,
                        download=options.download, weight_set=kind)
