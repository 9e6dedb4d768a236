"""Start-up for the Apple GPU (MPS): operators that MPS lacks run on the CPU instead of failing.

Torch reads ``PYTORCH_ENABLE_MPS_FALLBACK`` once, when it is imported, so this module imports no
torch and ``enable_mps_fallback`` must run before anything imports it (``main.py`` calls it first).
Torch names each operator that falls back in a warning, once; ``main.py`` routes warnings to the log."""
from __future__ import annotations

from collections.abc import MutableMapping

MPS_FALLBACK_ENV = "PYTORCH_ENABLE_MPS_FALLBACK"


def enable_mps_fallback(environ: MutableMapping[str, str], system: str) -> bool:
    """On macOS (``system`` as ``platform.system()`` says it), set the fallback on in ``environ``
    unless the user chose a value; return whether it is on."""
    if system != "Darwin":
        return False
    environ.setdefault(MPS_FALLBACK_ENV, "1")
    return environ[MPS_FALLBACK_ENV] == "1"


def describe_fallback(environ: MutableMapping[str, str]) -> str:
    """One line for the log: what happens to an operator the Apple GPU lacks."""
    if environ.get(MPS_FALLBACK_ENV) == "1":
        return (f"operators that MPS lacks run on the CPU ({MPS_FALLBACK_ENV}=1); torch names each one once "
                "in a warning")
    return (f"{MPS_FALLBACK_ENV} is not 1 when torch starts: an operator that MPS lacks stops with an error; "
            "start through main.py (it sets the variable) or set it yourself")
