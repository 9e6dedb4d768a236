"""A render server in a child process on this machine, for benchmarks and tests: started with a
command line (by default ``python main.py serve``), ready once ``/v1/health`` answers, stopped
with SIGINT (the server's Ctrl+C: Ray shut down in order) and killed, with its process group,
when it does not stop in time. Its output goes to a log file, so a failure can show it."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from .. import protocol as p

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[3]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at the moment (another process may take it before us)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def serve_command(port: int, *options: str, host: str = "127.0.0.1") -> list[str]:
    """``python main.py serve --host HOST --port PORT OPTIONS``."""
    return [sys.executable, str(REPO_ROOT / "main.py"), "serve", "--host", host, "--port", str(port), *options]


class LocalServer:
    """``command`` serves ``base_url`` (``http://HOST:PORT`` or ``https://...``; ``ca_file``: the
    certificate to trust for https). ``env``: extra environment variables. Use as a context
    manager, or ``start`` / ``stop``."""

    def __init__(self, command: Sequence[str], base_url: str, log_path: str | os.PathLike, *,
                 env: dict[str, str] | None = None, ca_file: str | None = None, cwd: str | os.PathLike = REPO_ROOT,
                 ready_timeout_s: float = 90.0, stop_timeout_s: float = 20.0) -> None:
        self.command = list(command)
        self.base_url = base_url.rstrip("/")
        self.log_path = Path(log_path)
        self.env = {**os.environ, **(env or {})}
        self.cwd = Path(cwd)
        self.context = ssl.create_default_context(cafile=ca_file) if base_url.startswith("https:") else None
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.process: subprocess.Popen | None = None
        self.ready_s: float | None = None        # seconds from the start to the first health answer

    def start(self) -> LocalServer:
        """Start the command and wait for its health answer; ``RuntimeError`` (with the end of
        its log) when it exits first or does not answer within ``ready_timeout_s``."""
        t0 = time.perf_counter()
        with open(self.log_path, "wb") as out:
            # a session of its own: the kill at the end reaches the Ray processes it started
            self.process = subprocess.Popen(self.command, cwd=self.cwd, env=self.env, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while time.perf_counter() - t0 < self.ready_timeout_s:
                if self.process.poll() is not None:
                    status = self.process.returncode
                    raise RuntimeError(f"render server exited with status {status}:\n{self.log_tail()}")
                if self.health() is not None:
                    self.ready_s = time.perf_counter() - t0
                    log.debug("render server ready in %.1f s", self.ready_s)
                    return self
                time.sleep(0.25)
            raise RuntimeError(f"render server not ready after {self.ready_timeout_s:g} s:\n{self.log_tail()}")
        except BaseException:
            self.stop()
            raise

    def health(self) -> dict[str, Any] | None:
        """The server's ``/v1/health`` answer, None while it does not answer (yet)."""
        try:
            with urllib.request.urlopen(self.base_url + p.HEALTH_PATH, timeout=2.0, context=self.context) as r:
                return json.loads(r.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def stop(self) -> int | None:
        """SIGINT, then SIGKILL to its process group after ``stop_timeout_s``; the exit status
        (None when never started)."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("render server did not stop within %g s: killed", self.stop_timeout_s)
        try:
            os.killpg(proc.pid, signal.SIGKILL)       # what is left of its Ray processes
        except (ProcessLookupError, PermissionError):
            pass
        return proc.wait()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
