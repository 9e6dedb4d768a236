"""``python -m app.diagnostics.group_bench``: a row per face count, each with the animator's frame
time and W+G batched and in single calls (stub backend: the figures' plumbing, not their values)."""
from __future__ import annotations

import json
from pathlib import Path

from app.diagnostics import group_bench


def test_a_stub_run_reports_one_row_per_face_count(examples: Path, tmp_path: Path) -> None:
    out = tmp_path / "group.json"
    assert group_bench.main(["--backend", "stub", "--examples", str(examples), "--frames", "2", "--json",
                             str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [row["faces"] for row in rows] == [1, 2, 3, 4]
    assert all(row["frame_ms"] > 0 and row["render_batch_ms"] >= 0 and row["render_singles_ms"] >= 0
               for row in rows)
