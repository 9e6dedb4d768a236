"""Choosing the torch device, and timing work on it."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(choice: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU. ``cuda`` without a usable GPU is an error."""
    if choice not in DEVICE_CHOICES and not choice.startswith("cuda:"):
        raise ValueError(f"unknown device {choice!r}; expected one of {', '.join(DEVICE_CHOICES)}")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is usable by this PyTorch build "
                         f"(torch {torch.__version__}); use --device cpu or install a CUDA build of torch")
    return torch.device(choice)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so a timer measures it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synced_ms(fn: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """``fn()`` and its milliseconds, with the device's queued work waited for before and after
    (the kernels are timed, not their launch)."""
    synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, (time.perf_counter() - t0) * 1000


def median_ms(fn: Callable[[], object], device: torch.device, runs: int, warmup: int) -> float:
    """Median milliseconds of ``fn()`` over ``runs`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    return statistics.median(synced_ms(fn, device)[1] for _ in range(runs))
