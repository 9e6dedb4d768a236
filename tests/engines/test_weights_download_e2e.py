"""The first-run weights download as a user's process does it: a child process with ``HF_ENDPOINT``
pointing at the local fake hub (``support.fake_hub``), which serves the parity kit's synthetic
checkpoint files in the official layout (written once per test session). The in-process tests of
each fault are in ``test_weights_http.py``; these check what only a real process shows: the console
bar on a terminal, a download killed mid-file, and ``main.py``'s one ``error:`` line.

``WEIGHT_SETS``: the kit's files for each set of weights (the animal weights: one more entry, once
the kit writes them)."""
from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support import REPO_ROOT
from support.fake_hub import FakeHub, Fault

from engines import weights

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(sys.platform == "win32", reason="uses a pseudo-terminal and SIGKILL")]

WEIGHT_SETS = [pytest.param(weights.LIVEPORTRAIT, id="liveportrait")]
DOWNLOAD = ("import sys; from pathlib import Path; from app.cli.console import configure_logging; "
            "configure_logging('INFO'); from engines.weights import ensure_weights; "
            "ensure_weights(Path(sys.argv[1]))")


@pytest.fixture(scope="module", params=WEIGHT_SETS)
def kit_hub(request: pytest.FixtureRequest, synthetic_weights_dir: Path):
    """The fake hub serving the kit's files of one weight set (hashed once per module)."""
    weight_set: weights.WeightSet = request.param
    files = {rel: synthetic_weights_dir / rel for rel in weight_set.files.values()}
    with FakeHub({weight_set.repo: files}) as hub:
        hub.weight_set = weight_set            # type: ignore[attr-defined]
        yield hub


@pytest.fixture()
def hub(kit_hub: FakeHub) -> FakeHub:
    kit_hub.faults.clear()
    kit_hub.requests.clear()
    return kit_hub


def child_env(endpoint: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "AVATARCAM_"))}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf_home"), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_ETAG_TIMEOUT="5", HF_HUB_DOWNLOAD_TIMEOUT="5", PYTHONUNBUFFERED="1")
    for proxy in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(proxy, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,127.0.0.2"
    return env


def start_on_terminal(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, list[bytes], threading.Thread]:
    """The child with standard output and error on a pseudo-terminal (as in a console window); what
    it writes is collected by a thread until the child exits."""
    import fcntl
    import termios

    main_fd, child_fd = os.openpty()
    # a terminal's size: on a fresh pseudo-terminal (0 columns) tqdm draws empty bars
    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=child_fd,
                            stderr=child_fd, close_fds=True)
    os.close(child_fd)
    out: list[bytes] = []

    def drain() -> None:
        try:
            while data := os.read(main_fd, 65536):
                out.append(data)
        except OSError:           # EIO: the child's side closed
            pass
        finally:
            os.close(main_fd)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    return proc, out, reader


def same_files(hub: FakeHub, weights_dir: Path, rels) -> None:
    for rel in rels:
        assert weights.file_sha256(weights_dir / rel) == hub.files[(hub.weight_set.repo, rel)].sha256, rel


def test_first_run_downloads_all_files_with_a_console_bar(hub: FakeHub, tmp_path: Path) -> None:
    weights_dir = tmp_path / "weights"
    proc, out, reader = start_on_terminal([sys.executable, "-c", DOWNLOAD, str(weights_dir)],
                                          child_env(hub.endpoint, tmp_path))
    assert proc.wait(timeout=240) == 0
    reader.join(timeout=10)
    console = b"".join(out).decode(errors="replace")
    for rel in hub.weight_set.files.values():
        size = hub.files[(hub.weight_set.repo, rel)].size
        mb = f"{size / 1e6:.1f}" if size < 10e6 else f"{size / 1e6:.0f}"
        assert f"INFO engines.weights: downloading {rel} ({mb} MB)" in console, console[-2000:]
        assert f"{Path(rel).name}: 100%" in console, console[-2000:]          # the client's bar, by file name
    assert "httpx" not in console              # no log line per HTTP request
    same_files(hub, weights_dir, hub.weight_set.files.values())
    assert [r.range for r in hub.requests if r.server == "cdn"] == [None] * len(hub.weight_set.files)


def test_download_killed_mid_file_leaves_no_file_at_its_final_path(hub: FakeHub, tmp_path: Path,
                                                                  synthetic_weights_dir: Path) -> None:
    weights_dir = tmp_path / "weights"
    rels = list(hub.weight_set.files.values())
    first, big, rest = rels[0], rels[1], rels[2:]
    for rel in rest:               # present already: this test is about the first two
        (weights_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        os.link(synthetic_weights_dir / rel, weights_dir / rel)
    size = hub.files[(hub.weight_set.repo, big)].size
    stall = hub.faults[big] = Fault(stall_after=size // 2)
    env = child_env(hub.endpoint, tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", DOWNLOAD, str(weights_dir)], cwd=REPO_ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert stall.stalled.wait(timeout=120), "the child never reached the middle of the file"
    finally:
        proc.send_signal(signal.SIGKILL)        # a crash or power cut: no clean-up code runs
        proc.wait(timeout=30)
    stall.release.set()
    assert not (weights_dir / big).exists()
    same_files(hub, weights_dir, [first])       # the file that had arrived is whole

    del hub.faults[big]
    done = subprocess.run([sys.executable, "-c", DOWNLOAD, str(weights_dir)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    same_files(hub, weights_dir, rels)
    assert len(hub.log(first)) == 1              # not fetched again


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("fault", ["offline", 404, 500])
def test_main_reports_a_failed_download_in_one_line(hub: FakeHub, tmp_path: Path, fault) -> None:
    weights_dir = tmp_path / "weights"
    rels = list(hub.weight_set.files.values())
    endpoint = hub.endpoint
    if fault == "offline":
        endpoint = f"http://127.0.0.1:{closed_port()}"
        expected = "error: cannot download the LivePortrait weights: 127.0.0.1 is unreachable (Connection refused); "
    else:
        hub.faults[rels[0]] = Fault(status=fault)
        phrase = {404: "Not Found", 500: "Internal Server Error"}[fault]
        expected = f"error: could not download {rels[0]} from {hub.weight_set.repo} " \
                   f"(the server answered HTTP {fault} ({phrase})); "
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "main.py", "--headless", "--weights", str(weights_dir), "--device", "cpu",
                           "--camera", str(tmp_path / "unused.mp4"), "--max-frames", "1"],
                          cwd=REPO_ROOT, env=child_env(endpoint, tmp_path), capture_output=True, text=True,
                          timeout=120)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == proc.stderr.splitlines()[-1], proc.stderr
    files = " ".join(rels)
    assert errors[0] == (expected + f"download them by hand with: hf download {hub.weight_set.repo} {files} "
                         f"--local-dir {weights_dir} (expected layout: {weights_dir}/liveportrait/base_models/*.pth "
                         f"and {weights_dir}/liveportrait/retargeting_models/stitching_retargeting_module.pth)")
    assert "Traceback" not in proc.stderr
    assert elapsed < 60          # the interpreter's start-up included; no half-minute of retries
