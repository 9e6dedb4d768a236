"""What a run of ``main.py`` must look like from outside: its exit status with nothing but our own
log lines (or one ``error:`` line) on standard error, and a recording that plays."""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

OUR_LOG_LINE = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")


def foreign_lines(stderr: str) -> list[str]:
    """Lines of standard error that are not our own log lines (indented continuation lines of a
    multi-line log record count as foreign: none is expected)."""
    return [line for line in stderr.splitlines() if line.strip() and not OUR_LOG_LINE.match(line)]


def assert_outcome(status: int, stderr: str, expected_status: int, error: str | None = None) -> None:
    assert status == expected_status, stderr[-3000:]
    assert "Traceback" not in stderr
    foreign = foreign_lines(stderr)
    if error is None:
        assert foreign == [], foreign
    else:
        assert len(foreign) == 1 and foreign[0].startswith("error: ") and error in foreign[0], foreign


def recorded_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a video file, asserting that it opens."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open"
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames
