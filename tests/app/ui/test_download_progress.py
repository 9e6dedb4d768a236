"""The window during a first-start weights download (offscreen): the status bar shows the file, its
percentage and megabytes while the download runs on the start-up thread, and the window's event loop
keeps running. The download is the real ``huggingface_hub`` client against the local fake hub."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PySide6 import QtCore
from support.fake_hub import FakeHub, Fault

from app.avatar.framing import AvatarChoice
from app.settings import LiveSettings
from app.ui.app import Starter
from app.ui.main_window import MainWindow
from app.ui.settings_store import SettingsStore
from engines import weights

MIB = 1 << 20


def test_status_bar_shows_download_progress_while_the_window_runs(qtbot, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    files = {}
    for i, rel in enumerate(weights.CHECKPOINT_FILES.values()):
        path = tmp_path / "hub" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(hashlib.shake_256(rel.encode()).digest(24 * MIB + 1 if i == 1 else 100_000))
        files[rel] = path
    big = list(files)[1]
    size = files[big].stat().st_size
    store = SettingsStore(QtCore.QSettings(str(tmp_path / "settings.ini"), QtCore.QSettings.Format.IniFormat))
    window = MainWindow(LiveSettings(), store)
    qtbot.addWidget(window)
    window.show()
    starter = Starter()
    starter.download_progress.connect(window.show_download)
    ticks: list[str] = []
    timer = QtCore.QTimer(window)
    timer.timeout.connect(lambda: ticks.append(window.statusBar().currentMessage()))
    timer.start(10)
    failures: list[str] = []
    starter.failed.connect(failures.append)

    def make_renderer():
        weights.ensure_weights(tmp_path / "weights", progress=starter.report_download)
        raise ValueError("downloaded")           # the test ends the start here

    with FakeHub({weights.HF_REPO: files}) as hub:
        hub.patch_endpoint(monkeypatch)
        stall = hub.faults[big] = Fault(stall_after=size * 6 // 10)     # holds the download mid-file
        window.busy("loading the networks…")
        starter.start(make_renderer, LiveSettings(), AvatarChoice(Path("unused.png")))
        # the client reports in 10 MiB pieces: while the server holds the file at 60%, 10 MiB are in
        shown = f"downloading {Path(big).name}: {100 * 10 * MIB // size}% (10 of {size / 1e6:.0f} MB)…"
        qtbot.waitUntil(lambda: window.statusBar().currentMessage() == shown, timeout=20000)
        assert window.progress.isVisible() and window.progress.maximum() == 1000
        assert window.progress.value() == 10 * MIB * 1000 // size
        # the client may count its 10 MiB before the server has sent up to the stall: wait for it
        qtbot.waitUntil(stall.stalled.is_set, timeout=20000)
        assert not stall.release.is_set()
        seen = len(ticks)
        qtbot.waitUntil(lambda: len(ticks) >= seen + 5, timeout=5000)      # the window keeps running meanwhile
        assert shown in ticks
        stall.release.set()
        qtbot.waitUntil(lambda: failures == ["downloaded"], timeout=20000)
    assert (tmp_path / "weights" / big).read_bytes() == files[big].read_bytes()
    last = Path(list(files)[-1]).name
    assert window.statusBar().currentMessage() == f"downloaded {last} (0.1 MB); loading…"
