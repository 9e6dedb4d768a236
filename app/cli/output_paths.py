"""Checking where the user asked us to write (``--record``, ``--screenshot``) before a run opens a
camera or loads a network, so that a bad path costs one line instead of a lost session."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


class OutputPathError(ValueError):
    """An output file cannot be written at the path given; the message names the option and the fix."""


def check_output_file(path: str | os.PathLike, suffixes: Sequence[str], option: str) -> Path:
    """``path`` as a ``Path`` when a file of one of ``suffixes`` (lower case, with the dot) can be
    written there: not a folder, a known extension, an existing folder, a file that can be opened
    for writing. Raises ``OutputPathError`` otherwise. Leaves an existing file as it is (the run
    overwrites it) and creates none."""
    p = Path(path).expanduser()
    where = f"{option} {path}"
    if p.is_dir():
        raise OutputPathError(f"{where}: is a folder; give a file name, e.g. {p / ('out' + suffixes[0])}")
    if p.suffix.lower() not in suffixes:
        what = f"'{p.suffix}' files" if p.suffix else "a file without an extension"
        raise OutputPathError(f"{where}: cannot write {what}; use one of {', '.join(suffixes)}")
    folder = p.parent
    if not folder.is_dir():
        raise OutputPathError(f"{where}: the folder {folder} does not exist; create it or choose another path")
    existed = p.exists()
    try:                  # the one sure test (permissions, read-only or pseudo file systems): open it
        with open(p, "ab"):
            pass
    except OSError as e:
        raise OutputPathError(f"{where}: cannot write there ({e.strerror}); choose another path") from None
    if not existed:
        p.unlink(missing_ok=True)
    return p
