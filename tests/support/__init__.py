"""Test helpers shared across the suite (``support.fakes``, ``support.outcomes``,
``support.render_server``) and the parity kit's adapters (``parity_adapter``, ``broken_networks``).
``tests/`` is on the import path through pytest's ``pythonpath`` setting (pyproject.toml)."""
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import torch

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]


def needs_cuda(reason: str = "needs a CUDA GPU") -> Callable[[T], T]:
    """Decorator for a test of the ``gpu`` tier: marked ``gpu`` and skipped without a CUDA GPU."""
    def mark(test: T) -> T:
        skip = pytest.mark.skipif(not torch.cuda.is_available(), reason=reason)
        return pytest.mark.gpu(skip(test))
    return mark
