"""What a replica of the render server knows beyond itself on a Ray cluster, for ``/v1/health``
(which Serve routes to any one replica): which replica and node answered, and the application's
sessions on all its replicas.

Each replica reports its open-session count to one small named actor per application
(``SessionRegistry``, detached, on the head node, created by whichever replica comes first): at
once when the count changes (fire-and-forget) and every ``REFRESH_S`` as a heartbeat. The same
loop fetches the registry's table into a cache, so health answers from memory and never waits
on the actor. A replica that has not reported for ``STALE_S`` (killed, or stopped) is left out.
Failures to reach the registry are logged at DEBUG and retried: health then shows the last
table, with its age."""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import ray
from ray import serve
from ray.serve.exceptions import RayServeException

log = logging.getLogger(__name__)

REFRESH_S = 2.0                     # heartbeat and cache refresh
STALE_S = 10.0                      # a replica silent this long is no longer counted
REGISTRY_PREFIX = "avatarcam-sessions-"
NAMESPACE = "serve"                 # Serve's own namespace, where its controller and replicas live


class Registry:
    """Open sessions per replica, as last reported, timed by the registry's own clock (the
    replicas' clocks may disagree). ``SessionRegistry`` is this as a Ray actor."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._replicas: dict[str, dict[str, Any]] = {}

    def report(self, replica: str, where: dict[str, Any], sessions: int) -> None:
        self._replicas[replica] = {**where, "sessions": sessions, "at": self._clock()}

    def table(self, stale_s: float) -> dict[str, dict[str, Any]]:
        """The replicas heard from within ``stale_s``; older ones are forgotten."""
        now = self._clock()
        self._replicas = {r: e for r, e in self._replicas.items() if now - e["at"] <= stale_s}
        return {r: {k: v for k, v in e.items() if k != "at"} for r, e in self._replicas.items()}


SessionRegistry = ray.remote(num_cpus=0, max_restarts=-1)(Registry)


def this_replica() -> dict[str, Any]:
    """Which replica this is (Serve's replica id) and where it runs (Ray node, host, pid); outside
    Serve (the class built directly, in tests) the replica, app and node are None."""
    try:
        context = serve.get_replica_context()
    except RayServeException:
        return {"replica": None, "app": None, "node_id": None, "node_ip": None, "host": socket.gethostname(),
                "replica_pid": os.getpid()}
    return {"replica": context.replica_id.unique_id, "app": context.app_name,
            "node_id": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address(),
            "host": socket.gethostname(), "replica_pid": os.getpid()}


class ClusterView:
    """A replica's link to its application's ``SessionRegistry``. ``start`` on the replica's event
    loop; ``sessions_changed`` on every change of its session count; ``health`` any time."""

    def __init__(self, replica: dict[str, Any]) -> None:
        self.replica = replica
        self.sessions = 0
        self._where = {k: replica[k] for k in ("node_id", "host", "replica_pid")}
        self._registry: Any = None
        self._table: dict[str, dict[str, Any]] | None = None
        self._table_at = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Report and refresh from now on; nothing outside a Serve replica's event loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self.replica["replica"] is not None:
            self._task = loop.create_task(self._refresh_forever(), name="cluster-view")

    def sessions_changed(self, sessions: int) -> None:
        self.sessions = sessions
        if self._task is not None:
            self._report()

    def health(self) -> dict[str, Any] | None:
        """The application's sessions: the sum and each replica's count (this one's as of now);
        None until the registry has answered once."""
        if self._table is None:
            return None
        replicas = {**self._table, self.replica["replica"]: {**self._where, "sessions": self.sessions}}
        return {"sessions": sum(e["sessions"] for e in replicas.values()), "replicas": replicas,
                "age_s": round(time.monotonic() - self._table_at, 1), "stale_after_s": STALE_S}

    # -- internals -----------------------------------------------------------------------------
    def _handle(self) -> Any:
        if self._registry is None:
            # get-or-create; on the head node, which lives as long as the cluster
            self._registry = SessionRegistry.options(
                name=REGISTRY_PREFIX + self.replica["app"], namespace=NAMESPACE, lifetime="detached",
                get_if_exists=True, resources={"node:__internal_head__": 0.001}).remote()
        return self._registry

    def _report(self) -> None:
        try:
            self._handle().report.remote(self.replica["replica"], self._where, self.sessions)
        except Exception as e:  # noqa: BLE001 - health's extras never cost a session
            log.debug("session registry unreachable: %s", e)
            self._registry = None

    async def _refresh_forever(self) -> None:
        while True:
            self._report()
            try:
                self._table = await asyncio.wait_for(self._handle().table.remote(STALE_S), REFRESH_S * 2)
                self._table_at = time.monotonic()
            except Exception as e:  # noqa: BLE001 - retried at the next heartbeat
                log.debug("session registry unreachable: %s", e)
                self._registry = None
            await asyncio.sleep(REFRESH_S)
