"""The render server as a Ray Serve application: one deployment, ``RenderServer``, whose replicas
each hold the networks on one device and serve live sessions over WebSockets (FastAPI ingress).

``build_app(args)`` is the application builder that ``python main.py serve`` runs and that a Serve
config file names (``import_path: app.remote.server.deployment:build_app``, see ``deploy/``). Within a
replica, the W+G renders of all sessions with a frame waiting run as one batch per weight set
(``serve.batch``, sized to the open sessions, so a lone session never waits for company). A replica
holds a backend per weight set (``WeightSets``): the sets in ``options.preload`` are loaded at its
start, any other when a session's avatar first needs it (in that session's worker thread, off the
event loop); each set is a full copy of F, M, W and G in the replica's memory.

Access fails closed: ``build_app`` refuses to build (a ``ValueError``, which ``serve status`` shows
as DEPLOY_FAILED) without a token of at least 16 characters, unless the options say
``loopback_only`` and Serve's proxies listen on loopback. The token is read once, where Serve
builds the application (``$AVATARCAM_TOKEN`` there, or ``main.py serve``'s ``--token``), and
travels to the replicas in their constructor's arguments; with ``token_file`` each replica reads
the file on its own node at its start instead, so the token is not kept in Serve's state.

``/v1/health`` answers from whichever replica Serve picks: it names that replica and its node and,
on a cluster, adds the application's sessions on all replicas (``cluster.ClusterView``)."""
# No ``from __future__ import annotations`` here: FastAPI must see the routes' real parameter
# types (a ``WebSocket`` annotated as a string turns into a required query parameter). And whatever
# the deployment class calls is defined above it: Serve captures the class when it is decorated.

import asyncio
import functools
import logging
from collections import Counter
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from fastapi import FastAPI, WebSocket
from ray import serve
from ray.serve import Application

from ...avatar.framing import AvatarKind
from ...cli.console import log_app_lines_to_stderr
from .. import protocol as p
from .batching import BatchedBackend, RenderRequest, render_by_set
from .cluster import ClusterView, this_replica
from .options import DEFAULTS, ServerOptions, is_loopback
from .service import RenderService
from .weight_sets import WeightSets, load_weight_set

log = logging.getLogger(__name__)

BATCH_WAIT_S = 0.003                # how long a frame waits for other sessions' frames, at most


def serve_http_host(timeout_s: float = 10.0) -> str | None:
    """The host Serve's proxies listen on, asked of Serve's controller; None where there is none
    to ask (no Ray here, or Serve not started)."""
    import ray

    if not ray.is_initialized():
        return None
    try:
        controller = ray.get_actor("SERVE_CONTROLLER_ACTOR", namespace="serve")
        return str(ray.get(controller.get_http_config.remote(), timeout=timeout_s).host)
    except (ValueError, ray.exceptions.RayError):       # ValueError: no controller (yet)
        return None


def check_loopback_only(options: ServerOptions, host: str | None) -> None:
    """A ``loopback_only`` server (no token needed) is refused where the proxies listen on ``host``
    other than loopback (None: not known here; the replica checks again)."""
    if options.loopback_only and host is not None and not is_loopback(host):
        raise ValueError(f"render server: loopback_only, but Serve's proxies listen on {host}: give a token "
                         "(AVATARCAM_TOKEN or token_file) or set http_options.host to 127.0.0.1")


api = FastAPI(title="AvatarCam render server", docs_url=None, redoc_url=None, openapi_url=None)


@serve.deployment(name="RenderServer", max_ongoing_requests=64, health_check_period_s=5.0,
                  graceful_shutdown_timeout_s=2.0, graceful_shutdown_wait_loop_s=0.5)
@serve.ingress(api)
class RenderServer:
    def __init__(self, options: ServerOptions) -> None:
        # session open/close lines: the replica's worker-*.err under the Ray session's logs/
        log_app_lines_to_stderr()
        if options.cpu_threads:
            torch.set_num_threads(options.cpu_threads)
        self.options = options
        check_loopback_only(options, serve_http_host())
        token = options.replica_token()             # token_file: read here, on this replica's node
        self.cluster = ClusterView(this_replica())
        self.cluster.start()
        self._loop: asyncio.AbstractEventLoop | None = None
        # each set's sessions reach its networks through a BatchedBackend of their own
        self.sets = WeightSets(functools.partial(load_weight_set, options),
                               share=lambda kind, backend: BatchedBackend(
                                   backend, functools.partial(self._render_one, kind)))
        for kind in options.preload:            # the first client of these kinds does not wait
            self.sets.get(kind)
        self._render_pool = ThreadPoolExecutor(1, thread_name_prefix="render-batch")
        self.service = RenderService(self.sets, token=token,
                                     max_sessions=options.max_sessions, idle_timeout_s=options.idle_timeout_s,
                                     limits=p.Limits(max_fps=options.max_fps), on_sessions=self._size_batches)
        self.batch_sizes: dict[int, int] = {}
        self._size_batches(0)

    @api.get(p.HEALTH_PATH)
    async def health(self) -> dict[str, Any]:
        # which replica answered, and where (Serve routes health to any one); the cluster's sessions
        # from the cached registry table: never waits on another actor
        return {**self.service.health(), "batches": {str(k): v for k, v in sorted(self.batch_sizes.items())},
                **self.cluster.replica, "cluster": self.cluster.health()}

    @api.websocket(p.SESSION_PATH)
    async def session(self, ws: WebSocket) -> None:
        self._loop = asyncio.get_running_loop()
        await self.service.serve(ws)

    def _render_one(self, kind: AvatarKind, request: RenderRequest) -> torch.Tensor:
        """From a session's worker thread: queue this frame's W+G (on ``kind``'s weight set) for
        the next batch and wait."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(self._render_batch((kind, request)), self._loop).result()

    @serve.batch(max_batch_size=DEFAULTS.max_batch, batch_wait_timeout_s=BATCH_WAIT_S)
    async def _render_batch(self, requests: list[tuple[AvatarKind, RenderRequest]]) -> list[torch.Tensor]:
        # one W+G batch per weight set among the collected frames
        for size in Counter(kind for kind, _ in requests).values():
            self.batch_sizes[size] = self.batch_sizes.get(size, 0) + 1
        # the batch runs off the event loop: other sessions' messages go on being received
        return await asyncio.get_running_loop().run_in_executor(self._render_pool, render_by_set,
                                                                self.sets.backend, requests)

    def _size_batches(self, sessions: int) -> None:
        self._render_batch.set_max_batch_size(max(1, min(self.options.max_batch, sessions)))
        self.cluster.sessions_changed(sessions)

    async def drain(self, reason: str = "server stopping") -> int:
        """Close every open session with 1001 (going away) and refuse new ones; ``main.py serve``
        calls it through a handle before Ray stops. Returns how many sessions were open."""
        return await self.service.drain(reason)

    def __del__(self) -> Coroutine[Any, Any, None] | None:
        # Serve's graceful shutdown calls this on the replica's event loop and awaits what it
        # returns: the sessions are told 1001 first. Called without a loop (garbage collection),
        # it can only release.
        if not hasattr(self, "service"):      # the constructor failed
            self._release()
            return None
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._release()
            return None
        return self._drain_and_release()

    async def _drain_and_release(self) -> None:
        try:
            await self.service.drain()
        finally:
            self._release()

    def _release(self) -> None:
        if self.__dict__.get("_released"):    # Serve's call, then garbage collection
            return
        self._released = True
        if hasattr(self, "service"):          # not when the constructor failed
            self.service.shutdown()
            self._render_pool.shutdown(wait=False)
        if hasattr(self, "sets"):             # every set's backend, the replica's own; its sessions'
            self.sets.close()                 # threads are not waited for: a call in flight completes
                                              # or raises RuntimeError


def uses_gpu(device: str) -> bool:
    """Whether a replica for ``device`` needs a GPU from Ray (which hides GPUs from actors that
    did not ask for one)."""
    if device == "cuda":
        return True
    return device == "auto" and torch.cuda.is_available()


def build_app(args: dict[str, Any]) -> Application:
    """The Serve application for ``args`` (``ServerOptions`` fields). One GPU per replica where
    the device is a GPU; replicas, autoscaling and resources can be overridden in a config file.
    ``ValueError`` (DEPLOY_FAILED) without a token where one is needed (``check_access``)."""
    options = ServerOptions.from_args(dict(args))
    options.check_access()
    check_loopback_only(options, serve_http_host())
    return RenderServer.options(
        ray_actor_options={"num_gpus": 1 if uses_gpu(options.device) else 0},
        max_ongoing_requests=options.max_sessions + 8,     # a session is one ongoing request
        max_constructor_retry_count=2,                     # a replica that cannot start says so soon
    ).bind(options)
