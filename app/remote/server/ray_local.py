"""Run in every Ray worker process of ``main.py serve`` on a loopback host (Ray's
``worker_process_setup_hook``): Serve's replicas start their inter-deployment gRPC server on every
interface (``[::]:0``, hard-coded in Ray Serve 2.60's ``replica.py``), without Ray's token. Here
that address becomes loopback, so nothing of the server listens beyond the machine. The patch is
made only where Serve's replica module has the function it expects."""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def keep_replica_grpc_on_loopback() -> None:
    try:
        from ray.serve._private import replica
    except ImportError:     # no Serve in this worker's environment: nothing to keep local
        return
    original = getattr(replica, "add_port_to_grpc_server", None)
    if original is None or getattr(original, "_loopback", False):
        if original is None:
            log.warning("Serve's replica gRPC address not patched: add_port_to_grpc_server not found")
        return

    def loopback(server: Any, address: str) -> int:
        if address.startswith("[::]:") or address.startswith("0.0.0.0:"):
            address = "127.0.0.1:" + address.rsplit(":", 1)[1]
        return original(server, address)

    loopback._loopback = True       # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = loopback
