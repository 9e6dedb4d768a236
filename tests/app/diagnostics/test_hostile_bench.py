"""The hostile-client matrix's own parts: the memory it reports, the hostile JPEG it sends and the
table it prints (the attacks themselves run against a real server: ``python -m
app.diagnostics.hostile_bench``, whose output the README shows)."""
from __future__ import annotations

import os

import cv2
import numpy as np

from app.diagnostics import hostile_bench as hb


def test_group_memory_counts_this_process_group():
    mine = hb.group_rss_mb(os.getpgid(0))
    with open("/proc/self/statm") as f:
        own = int(f.read().split()[1]) * hb.PAGE / 2**20
    assert mine >= own > 0
    assert hb.group_rss_mb(2**22 + 12345) == 0            # no such group


def test_many_scans_jpeg_has_the_scans_asked_for_and_stays_a_jpeg():
    data = hb.many_scans_jpeg(200)
    assert data.count(b"\xff\xda") == 200
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == hb.p.DRIVING_SHAPE


def test_table_has_a_row_per_case():
    rows = [hb.Row("no_token", "a handshake", "HTTP 403", "served", "10 -> 10", 1.0),
            hb.Row("slowloris", "slow heads", "0 of 5 open", "served", "10 -> 11", 2.5)]
    lines = hb.table(rows).splitlines()
    assert len(lines) == 4 and lines[2].startswith("| no_token |") and "| 2.5 |" in lines[3]
