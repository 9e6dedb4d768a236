"""File writing shared by the exporters."""
from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: bytes | memoryview) -> None:
    """Write next to ``path`` and rename: an interrupted export or build never leaves a
    half-written graph, engine or manifest in place."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
