"""What the command line shows on the console: our own log lines, one ``error: ...`` line when a run
cannot go on, and nothing from the native libraries underneath (MediaPipe, TensorFlow Lite, absl,
OpenCV and its FFmpeg, Qt) unless ``--log-level DEBUG`` asks for everything. Also the exit statuses.

This module imports no native library: it must run before they load."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import TextIO

EXIT_OK = 0
EXIT_BAD_INPUT = 2          # bad input or setup: one ``error:`` line says what and what to do
EXIT_INTERRUPTED = 130      # Ctrl+C (128 + SIGINT, the shell's convention)

# Read by OpenCV when it loads. They quieten its own messages ("[ WARN:0@0.8] global cap_v4l.cpp ...")
# and FFmpeg's ("moov atom not found") even where standard error cannot be redirected.
NATIVE_LOG_ENV = {
    "OPENCV_LOG_LEVEL": "SILENT",
    "OPENCV_FFMPEG_LOGLEVEL": "-8",          # AV_LOG_QUIET
}

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def log_app_lines_to_stderr() -> None:
    """In a Ray process (a replica, Serve's proxy), our loggers' INFO lines go to its standard
    error, which Ray keeps in the process's log file and forwards to a driver's console; Ray's own
    loggers keep their configuration. Once per process: a second call adds nothing."""
    ours = logging.getLogger("app")
    if not ours.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        ours.addHandler(handler)
        ours.setLevel(logging.INFO)
        ours.propagate = False
error_log = logging.getLogger("avatarcam.exit")


class StderrHandler(logging.StreamHandler):
    """Writes each record to whatever ``sys.stderr`` is at that moment (it is swapped while native
    output is silenced)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass                    # StreamHandler.__init__ assigns it; the property decides


def configure_logging(level: str) -> None:
    """Our log lines (``LEVEL name: message``) and the plain ``error: ...`` line on standard error.
    Calling it again only changes the level."""
    root = logging.getLogger()
    root.setLevel(level)
    if not any(isinstance(h, StderrHandler) for h in root.handlers):
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    if not error_log.handlers:
        plain = StderrHandler()
        plain.setFormatter(logging.Formatter("%(message)s"))
        error_log.addHandler(plain)
        error_log.propagate = False


def report_error(message: str) -> None:
    """The one line a run that cannot go on ends with: ``error: <what is wrong and what to do>``."""
    error_log.error("error: %s", message)


@contextlib.contextmanager
def native_output_silenced(enabled: bool = True) -> Iterator[None]:
    """Within the block, the native libraries' messages are dropped; Python's standard error (our
    log lines, warnings, a bug's traceback) still reaches the console.

    MediaPipe 0.10 logs through absl and TensorFlow Lite through its own logger, straight to file
    descriptor 2 with no setting that turns them off (GLOG_minloglevel and TF_CPP_MIN_LOG_LEVEL have
    no effect on them), so descriptor 2 itself goes to the null device and ``sys.stderr`` moves to a
    duplicate of the original one. Both are restored on exit."""
    saved_env = {name: os.environ.get(name) for name in NATIVE_LOG_ENV}
    if enabled:
        for name, value in NATIVE_LOG_ENV.items():
            os.environ.setdefault(name, value)          # a user's own setting wins
    try:
        with _stderr_descriptor_to_null() if enabled else contextlib.nullcontext():
            yield
    finally:
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _stderr_descriptor_to_null() -> Iterator[None]:
    """Descriptor 2 to the null device; ``sys.stderr``, where it writes to descriptor 2, to a duplicate."""
    try:
        saved_fd = os.dup(2)
    except OSError:                                  # no standard error at all (e.g. pythonw)
        yield
        return
    python_stderr = sys.stderr
    try:
        python_on_fd2 = python_stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):    # a captured stream: not on the descriptor
        python_on_fd2 = False
    if python_stderr is not None:
        python_stderr.flush()
    null_fd = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null_fd, 2)
    os.close(null_fd)
    if python_on_fd2:
        sys.stderr = open(saved_fd, "w", buffering=1, encoding=python_stderr.encoding,
                          errors="backslashreplace", closefd=False)
    try:
        yield
    finally:
        if python_on_fd2:
            sys.stderr.flush()
            sys.stderr.close()
            sys.stderr = python_stderr
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
