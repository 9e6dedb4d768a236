"""The pinned Qt binding keeps Python's reference counts right: PySide6 6.12.0 dropped one reference
to ``None`` on every call that returns nothing, and on Python 3.11 (where ``None`` is not immortal)
the window then aborted with "none_dealloc" after a few thousand calls."""
from __future__ import annotations

import os
import subprocess
import sys

CHECK = """
import sys
from PySide6 import QtWidgets
app = QtWidgets.QApplication([])
label = QtWidgets.QLabel()
before = sys.getrefcount(None)
for _ in range(20000):
    label.setText("x")       # returns nothing
    label.update()           # returns nothing
print(sys.getrefcount(None) - before)
"""


def test_void_qt_calls_leave_none_refcount_alone():
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert abs(int(result.stdout.strip().splitlines()[-1])) < 100
