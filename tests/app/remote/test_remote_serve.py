"""``python main.py serve``: the render server on a real local Ray instance (stub engine), with
the headless client against it: the same video as the local run, refusals with one line and exit
2, batching across concurrent sessions, a killed replica replaced and its client back by itself,
animal and human avatars at once (the animal weight set loaded on first use), and Ctrl+C stopping
the server within 5 s. One server serves the whole module (Ray takes seconds
to start)."""
from __future__ import annotations

import dataclasses
import os
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from support.fakes import fake_face, run_main
from support.outcomes import assert_outcome, recorded_frames
from support.render_server import Frames, send_avatar, session

from app.animation.frames import Status
from app.cli.console import EXIT_BAD_INPUT, EXIT_INTERRUPTED
from app.remote import protocol as p
from app.remote.client import RemoteAnimator, RemoteServer
from app.remote.server.local_server import LocalServer, free_port, serve_command
from app.settings import AnimationSettings, LiveSettings

pytestmark = pytest.mark.integration

TOKEN = "render-server-test-token"
CLIENT = ("--headless", "--no-virtual-camera", "--remote-format", "raw")


class ServerProcess(LocalServer):
    """``main.py serve`` (stub engine) on a free loopback port, with its console in ``log_path``."""

    def __init__(self, log_path: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        super().__init__(serve_command(self.port, *args), f"http://127.0.0.1:{self.port}", log_path,
                         env={"RAY_USAGE_STATS_ENABLED": "0"})

    @property
    def lines(self) -> list[str]:
        return self.log_tail(100_000).splitlines()

    def interrupt(self, timeout: float = 30) -> float:
        """Ctrl+C; seconds until the process ended."""
        t0 = time.monotonic()
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout)
        return time.monotonic() - t0


def descends_from(pid: int, ancestor: int) -> bool:
    """Whether process ``pid`` is ``ancestor`` or one of its descendants (Linux: /proc)."""
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])      # the field after the state: the parent's PID
    return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with ServerProcess(tmp_path_factory.mktemp("serve") / "console.log", "--backend", "stub", "--token", TOKEN,
                       "--idle-timeout", "10") as s:
        deadline = time.monotonic() + 30        # health may answer a moment before the line is out
        while not any("render server ready" in line for line in s.lines):
            assert time.monotonic() < deadline, s.log_tail()
            time.sleep(0.1)
        yield s


def test_serve_refuses_a_public_address_without_a_token_before_starting():
    proc = run_main("serve", "--backend", "stub", "--host", "0.0.0.0", "--port", str(free_port()), timeout=120)
    assert_outcome(proc.returncode, proc.stderr, EXIT_BAD_INPUT, "refusing to listen on 0.0.0.0 without a token")


def test_serve_refuses_a_busy_port_and_a_short_token():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        proc = run_main("serve", "--backend", "stub", "--port", str(port), timeout=120)
    assert_outcome(proc.returncode, proc.stderr, EXIT_BAD_INPUT, f"cannot listen on 127.0.0.1:{port}")
    proc = run_main("serve", "--backend", "stub", "--token", "short", timeout=120)
    assert_outcome(proc.returncode, proc.stderr, EXIT_BAD_INPUT, "at least 16 characters")


def test_an_unreachable_server_ends_the_client_with_one_line(examples: Path, tmp_path: Path):
    proc = run_main(*CLIENT, "--remote", f"ws://127.0.0.1:{free_port()}", "--avatar", str(examples / "s0.jpg"),
                    "--camera", str(examples / "d0.mp4"), "--max-frames", "3", "--record", str(tmp_path / "o.mp4"))
    assert_outcome(proc.returncode, proc.stderr, EXIT_BAD_INPUT, "cannot reach the render server")
    assert not (tmp_path / "o.mp4").exists()


def test_the_server_says_where_it_serves_and_answers_health(server: ServerProcess):
    assert any(f"ws://127.0.0.1:{server.port}{p.SESSION_PATH}" in line for line in server.lines)
    health = server.health()
    assert health["status"] == "ok" and health["version"] == p.VERSION and health["backend"] == "stub"
    assert TOKEN not in "\n".join(server.lines)


def test_a_wrong_token_ends_the_client_with_one_line(server: ServerProcess, examples: Path):
    proc = run_main(*CLIENT, "--remote", server.url, "--token", "not-the-right-token", "--avatar",
                    str(examples / "s0.jpg"), "--camera", str(examples / "d0.mp4"), "--max-frames", "3")
    assert_outcome(proc.returncode, proc.stderr, EXIT_BAD_INPUT, "refused the token")
    assert "not-the-right-token" not in proc.stderr


def test_the_remote_video_is_the_local_video(server: ServerProcess, examples: Path, tmp_path: Path):
    common = ("--avatar", str(examples / "s1.jpg"), "--camera", str(examples / "d0.mp4"), "--max-frames", "24",
              "--background", "blur")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    remote = run_main(*CLIENT, "--remote", server.url, "--token-file", str(token_file), *common,
                      "--record", str(tmp_path / "remote.mp4"))
    local = run_main("--headless", "--no-virtual-camera", "--backend", "stub", *common,
                     "--record", str(tmp_path / "local.mp4"))
    assert_outcome(remote.returncode, remote.stderr, 0)
    assert_outcome(local.returncode, local.stderr, 0)
    a, b = recorded_frames(tmp_path / "remote.mp4"), recorded_frames(tmp_path / "local.mp4")
    assert len(a) == len(b) == 24
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert np.array_equal(x, y), f"frame {i}"


def test_concurrent_sessions_are_batched_and_render_as_alone(server: ServerProcess, avatar_face):
    crops = [np.roll(np.full(p.DRIVING_SHAPE, 60, np.uint8), k, axis=1) for k in range(12)]
    for k, crop in enumerate(crops):
        crop[40 + 5 * k:120, 60:200] = 220                              # a moving bright patch: changing motion
    faces = [dataclasses.replace(fake_face(), network_input=crop) for crop in crops]

    def run(n_out: list, barrier: threading.Barrier | None) -> None:
        client = RemoteAnimator(RemoteServer.parse(server.url, TOKEN, frame_format="raw"),
                                LiveSettings(AnimationSettings(reference_frames=2)), avatar_face)
        client.connect()
        if barrier is not None:
            barrier.wait()
        try:
            n_out.extend(client.process(f, i / 30).image for i, f in enumerate(faces))
        finally:
            client.close()

    alone: list = []
    run(alone, None)
    before = server.health()["batches"]
    outs: list[list] = [[] for _ in range(4)]
    barrier = threading.Barrier(4)
    threads = [threading.Thread(target=run, args=(o, barrier)) for o in outs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    after = server.health()["batches"]
    batched = sum(n for size, n in after.items() if int(size) > 1) - sum(
        n for size, n in before.items() if int(size) > 1)
    assert batched > 0, after
    for out in outs:
        assert len(out) == len(alone)
        assert all(np.array_equal(x, y) for x, y in zip(out, alone, strict=True))


def test_a_killed_replica_is_replaced_and_its_client_comes_back(server: ServerProcess, avatar_face):
    client = RemoteAnimator(RemoteServer.parse(server.url, TOKEN, frame_format="raw", ping_interval_s=0.5,
                                               ping_timeout_s=2.0),
                            LiveSettings(AnimationSettings(reference_frames=2)), avatar_face)
    client.connect()
    try:
        for i in range(4):
            assert client.process(fake_face(), i / 30).rendered or i < 2
        # the replica that answers this server's health, and only if this server started it
        replica = server.health()["replica_pid"]
        assert descends_from(replica, server.process.pid), f"replica {replica} is not a process of this server"
        os.kill(replica, signal.SIGKILL)
        statuses = []
        deadline = time.monotonic() + 90
        while True:
            out = client.process(fake_face(), time.monotonic())
            statuses.append(out.status)
            if out.rendered:
                break
            assert time.monotonic() < deadline, statuses[-5:]
            time.sleep(0.2)
        assert Status.SERVER_LOST in statuses and client.link.connects == 2
    finally:
        client.close()
    assert server.health()["status"] == "ok"


def test_animal_and_human_avatars_at_once_and_a_switch_of_kind(server: ServerProcess):
    """The replica loads the animal set at the first animal avatar (the human one at its start);
    a human session at the same time goes on; a session switching kinds renders on."""
    url = server.url + p.SESSION_PATH
    assert server.health()["weight_sets"] == ["human"]
    cat = session(url, TOKEN, avatar=np.full(p.CROP_SHAPE, 200, np.uint8), kind="animal")
    person = session(url, TOKEN, avatar=np.full(p.CROP_SHAPE, 60, np.uint8))
    try:
        assert server.health()["weight_sets"] == ["human", "animal"]
        cats, people = Frames(cat, timeout=30), Frames(person, timeout=30)
        for _ in range(6):                           # both sessions open, frames in turn
            cats.send()
            people.send()
        assert cats.send()[0]["rendered"] and people.send()[0]["rendered"]
        assert send_avatar(person, np.full(p.CROP_SHAPE, 120, np.uint8), "animal", timeout=30)["kind"] == "animal"
        assert people.send(4)[-1]["rendered"]
    finally:
        cat.close()
        person.close()
    assert any("animal weight set loaded in" in line for line in server.lines), server.log_tail()


def test_ctrl_c_stops_the_server_within_5_s(server: ServerProcess):
    seconds = server.interrupt()
    assert seconds <= 5.0, seconds
    assert server.process.returncode == EXIT_INTERRUPTED, "\n".join(server.lines[-20:])
    assert any("render server stopped" in line for line in server.lines)
    assert "Traceback" not in "\n".join(server.lines)
