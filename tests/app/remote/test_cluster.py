"""The render server on a Ray cluster: what ``/v1/health`` tells about the cluster (the replica
that answered, its node, every replica's sessions), what a refused client is told, and a real
two-node cluster on this machine (``ray start`` twice, on loopback, in a private temporary
directory) running deploy/serve_config.cpu.yaml: sessions on both replicas, one replica killed,
its clients back by themselves. The cluster test cleans up only the processes it started."""
from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import REPO_ROOT
from support.fakes import fake_face
from support.render_server import render_server

from app.remote.client import RemoteAnimator, RemoteAuthError, RemoteServer
from app.remote.server.local_server import LocalServer, free_port, serve_command
from app.remote.server.options import TOKEN_ENV
from app.settings import AnimationSettings, LiveSettings

log = logging.getLogger(__name__)

TOKEN = "cluster-test-token-0123456789"
CPU_CONFIG = REPO_ROOT / "deploy" / "serve_config.cpu.yaml"


# -- health and refusals without Ray -----------------------------------------------------------
def test_health_says_whether_a_token_is_required_and_no_cluster_without_serve() -> None:
    with render_server(TOKEN) as server:
        health = server.service.health()
    assert health["token_required"] is True and health["status"] == "ok"
    assert not {"cluster", "replica", "node_id"} & set(health)      # the plain FastAPI server has none
    with render_server() as server:
        assert server.service.health()["token_required"] is False


def test_a_refused_client_is_told_where_the_servers_token_comes_from(avatar_face) -> None:
    with render_server(TOKEN) as server:
        client = RemoteAnimator(RemoteServer.parse(server.url, "not-the-token-0123456789"), LiveSettings(),
                                avatar_face)
        with pytest.raises(RemoteAuthError) as refused:
            client.connect()
    message = str(refused.value)
    assert "refused the token" in message and "not-the-token" not in message
    # a user of `main.py serve` and one of a cluster both learn where to look
    assert "--token/--token-file" in message and TOKEN_ENV in message and "token_file" in message


def test_the_registry_counts_the_replicas_heard_from_lately() -> None:
    pytest.importorskip("ray.serve", reason="the render server needs requirements-server.txt")
    from app.remote.server.cluster import ClusterView, Registry

    now = [100.0]
    registry = Registry(clock=lambda: now[0])
    registry.report("a", {"node_id": "n1"}, 2)
    registry.report("b", {"node_id": "n2"}, 1)
    now[0] += 5
    registry.report("a", {"node_id": "n1"}, 3)
    assert registry.table(10.0) == {"a": {"node_id": "n1", "sessions": 3}, "b": {"node_id": "n2", "sessions": 1}}
    now[0] += 6                                     # b silent for 11 s: killed, or gone
    assert registry.table(10.0) == {"a": {"node_id": "n1", "sessions": 3}}

    view = ClusterView({"replica": "b", "app": "avatarcam", "node_id": "n2", "host": "h", "replica_pid": 7})
    assert view.health() is None                    # the registry has not answered yet
    view._table, view._table_at = registry.table(10.0), time.monotonic()
    view.sessions = 4                               # this replica's own count is always its latest
    health = view.health()
    assert health is not None and health["sessions"] == 7
    assert health["replicas"]["b"] == {"node_id": "n2", "host": "h", "replica_pid": 7, "sessions": 4}


# -- main.py serve on loopback needs no token --------------------------------------------------
@pytest.mark.integration
def test_main_serve_on_loopback_runs_without_a_token(tmp_path: Path, avatar_face) -> None:
    port = free_port()
    env = {"RAY_USAGE_STATS_ENABLED": "0", TOKEN_ENV: ""}
    with LocalServer(serve_command(port, "--backend", "stub"), f"http://127.0.0.1:{port}", tmp_path / "serve.log",
                     env=env) as server:
        health = server.health()
        assert health is not None and health["token_required"] is False, server.log_tail()
        assert health["replica"] and health["node_id"] and health["replica_pid"] > 0
        client = RemoteAnimator(RemoteServer.parse(f"ws://127.0.0.1:{port}"), LiveSettings(), avatar_face)
        client.connect()
        client.close()


# -- a two-node cluster ------------------------------------------------------------------------
def _ray_ports() -> list[str]:
    """Free ports for what would otherwise take fixed ones (shared with other Ray instances here)."""
    return ["--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
            "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port())]


MARKER = "AVATARCAM_TEST_RAY_DIR"     # in the environment of every process of a test cluster


def _processes_marked(directory: str) -> list[int]:
    """PIDs of the processes whose environment names ``directory`` as theirs (Linux: /proc; Ray
    renames its workers' command lines, their environment is inherited)."""
    mark = f"{MARKER}={directory}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if mark in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


class TwoNodeCluster:
    """A Ray head and a second raylet on this machine, both ``ray start --block`` children in
    process groups of their own, with a private temporary directory (short: Ray's socket paths
    are limited to about 100 characters). ``stop`` kills those groups and any process marked as
    this cluster's (``MARKER``); never ``ray stop``, which would end every Ray here."""

    def __init__(self, env: dict[str, str]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="avc-ray-", dir="/tmp"))
        self.env = {**os.environ, **env, MARKER: str(self.dir)}
        self.gcs_port = free_port()
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.processes: list[subprocess.Popen] = []

    def _ray_start(self, name: str, *args: str) -> None:
        with open(self.dir / f"{name}.out", "wb") as out:
            self.processes.append(subprocess.Popen(
                [str(Path(sys.executable).parent / "ray"), "start", "--block", "--node-ip-address", "127.0.0.1",
                 "--num-cpus", "2", "--disable-usage-stats", *_ray_ports(), *args],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))

    def start(self) -> TwoNodeCluster:
        self._ray_start("head", "--head", "--port", str(self.gcs_port), "--temp-dir", str(self.dir),
                        "--include-dashboard", "false", "--ray-client-server-port", str(free_port()))
        deadline = time.monotonic() + 60
        while True:                     # the second node joins once the head's GCS answers
            try:
                socket.create_connection(("127.0.0.1", self.gcs_port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and self.processes[0].poll() is None, self.log()
                time.sleep(0.2)
        self._ray_start("worker", "--address", self.address)
        return self

    def log(self, pattern: str = "*.out", chars: int = 3000) -> str:
        """The ends of the ``ray start`` outputs and of the session's log files matching ``pattern``."""
        paths = sorted(self.dir.glob("*.out")) + sorted(self.dir.glob(f"session_latest/logs/{pattern}"))
        status = ", ".join(f"ray start {p.pid}: {'running' if p.poll() is None else p.returncode}"
                           for p in self.processes)
        return status + "\n" + "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}"
                                         for p in dict.fromkeys(paths))

    def stop(self) -> None:
        for proc in self.processes:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)
        for pid in _processes_marked(str(self.dir)):                # workers outside those groups
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[TwoNodeCluster]:
    # Ray's own token authentication on, as the README's checklist has it: every process that
    # joins or deploys carries the token (this machine may hold a ~/.ray/auth_token: not ours).
    # Each proxy prefers its own node's replicas, and the kernel may hand every connection to one of
    # the two proxies sharing the port here: routing by load instead spreads the sessions.
    env = {"PYTHONPATH": str(REPO_ROOT), TOKEN_ENV: TOKEN, "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "ray-cluster-test-token-" + os.urandom(8).hex(),
           "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0"}
    nodes = TwoNodeCluster(env).start()
    try:
        yield nodes
    finally:
        nodes.stop()


def cpu_config_on(port: int) -> dict[str, Any]:
    """deploy/serve_config.cpu.yaml as the test serves it: on loopback, on a free port."""
    config = copy.deepcopy(yaml.safe_load(CPU_CONFIG.read_text()))
    config["http_options"].update(host="127.0.0.1", port=port)
    return config


def wait_for(what: str, check, timeout_s: float, log=lambda: "") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g} s\n{log()}"
        time.sleep(0.3)


@pytest.mark.integration
def test_two_nodes_share_the_sessions_and_survive_a_killed_replica(cluster: TwoNodeCluster, tmp_path: Path,
                                                                   avatar_face) -> None:
    t0 = time.monotonic()
    port = free_port()
    config_path = tmp_path / "serve_config.cpu.yaml"
    config_path.write_text(yaml.safe_dump(cpu_config_on(port)))
    # PYTHONPATH, not the working directory, finds the application, as on a cluster
    deploy = subprocess.run([str(Path(sys.executable).parent / "serve"), "run", "--non-blocking", "--address",
                             cluster.address, str(config_path)], env=cluster.env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=150)
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:] + cluster.log()

    def health_now() -> dict[str, Any]:
        """Health from whichever replica the proxy picks; {} while none answers."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=5) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return {}

    def cluster_health() -> dict[str, Any] | None:
        health = health_now()
        table = (health or {}).get("cluster") or {}
        nodes = {e["node_id"] for e in table.get("replicas", {}).values()}
        return health if len(nodes) == 2 else None

    health = wait_for("two replicas on two nodes", cluster_health, 150,
                      lambda: cluster.log("raylet.out", 1500) + cluster.log("serve/controller_*", 2000))
    ready_s = time.monotonic() - t0
    assert health["token_required"] is True and health["backend"] == "stub"

    def client() -> RemoteAnimator:
        c = RemoteAnimator(RemoteServer.parse(f"ws://127.0.0.1:{port}", TOKEN, frame_format="raw",
                                              ping_interval_s=0.5, ping_timeout_s=2.0),
                           LiveSettings(AnimationSettings(reference_frames=2)), avatar_face)
        c.connect()
        return c

    def sessions_per_replica(total: int) -> dict[str, dict[str, Any]] | None:
        table = health_now().get("cluster") or {}
        return table["replicas"] if table.get("sessions") == total and len(table["replicas"]) == 2 else None

    # four sessions, more until both replicas hold some (Serve routes to the less busy of two)
    clients = []
    try:
        while True:
            clients.append(client())
            replicas = wait_for(f"{len(clients)} sessions counted", lambda: sessions_per_replica(len(clients)), 30)
            if len(clients) >= 4 and all(e["sessions"] > 0 for e in replicas.values()) or len(clients) == 8:
                break
        assert all(e["sessions"] > 0 for e in replicas.values()), replicas
        for i, c in enumerate(clients):
            assert c.process(fake_face(), i / 30) is not None

        # kill -9 one replica: only a process of this cluster
        victim, entry = next(iter(replicas.items()))
        assert entry["replica_pid"] in _processes_marked(str(cluster.dir)), entry
        os.kill(entry["replica_pid"], signal.SIGKILL)
        t_kill = time.monotonic()

        def all_back() -> bool:
            return all([c.process(fake_face(), time.monotonic()).rendered for c in clients])   # each one a frame

        wait_for("every client rendering again", all_back, 90, lambda: cluster.log("*.err", 1500))
        back_s = time.monotonic() - t_kill
        # the killed replica's clients reconnected once; the others never noticed
        assert sorted(c.link.connects for c in clients) == sorted(
            [2] * entry["sessions"] + [1] * (len(clients) - entry["sessions"]))
        # health leaves the killed replica out (silent for STALE_S) and counts its replacement
        after = wait_for("the killed replica left out, its replacement counted",
                         lambda: (r := sessions_per_replica(len(clients))) and victim not in r and r, 60,
                         lambda: str(health_now()))
        assert {e["node_id"] for e in after.values()} == {e["node_id"] for e in replicas.values()}
    finally:
        for c in clients:
            c.close()
    # our session lines are in the replicas' worker-*.err files of the Ray session's logs/
    err = "".join(p.read_text(errors="replace") for p in cluster.dir.glob("session_*/logs/worker-*.err"))
    assert "session 1 opened" in err, cluster.log("*.err", 500)
    log.info("two-node cluster: ready in %.1f s, %d sessions, clients back %.1f s after the kill, %.1f s in all",
             ready_s, len(clients), back_s, time.monotonic() - t0)
