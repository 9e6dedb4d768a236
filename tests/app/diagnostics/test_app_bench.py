"""``python -m app.diagnostics.bench``: the live-loop benchmark's command line and its figures (stub backend)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.fakes import ClosingStub

from app.diagnostics import bench
from engines.select import BACKEND_KINDS


def test_backend_choices_are_the_backend_kinds(capsys) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--help"])
    text = capsys.readouterr().out
    assert all(kind in text for kind in BACKEND_KINDS)
    with pytest.raises(SystemExit) as err:
        bench.main(["--backend", "no-such-backend"])
    assert err.value.code == 2


def test_lossless_stub_run_reports_every_frame(d0: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert bench.main(["--backend", "stub", "--tracking", "replay", "--video", str(d0), "--frames", "6",
                       "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["backend"] == "stub" and report["lossless"] and report["frames_out"] == 6
    assert report["dropped"] == 0 and report["fps"] > 0
    assert {"capture", "tracking", "animation", "output"} <= set(report["stage_ms"])
    assert set(report["network_ms"]) == {"F appearance", "M motion", "W+G render"}   # timed per network


def test_timed_backend_closes_the_backend_it_times() -> None:
    inner = ClosingStub()
    bench.TimedBackend(inner).close()
    assert inner.closes == 1
