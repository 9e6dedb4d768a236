"""The device vocabulary (``--device auto|cpu|cuda|mps``), the decision it makes from facts about
the machine, and timing work on a device.

The decision is a pure function of ``DeviceFacts`` (``choose_device``), so every kind of machine is
tested without its hardware; ``DeviceFacts.probe`` gathers the facts for real. Every other place
that needs the device choice (the backend selection, ONNX Runtime's providers, the benchmarks)
asks here."""
from __future__ import annotations

import platform
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch.utils._python_dispatch import TorchDispatchMode

T = TypeVar("T")

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class DeviceFacts:
    cuda: bool                  # torch can use an NVIDIA GPU
    mps: bool = False           # torch can use an Apple GPU (Metal Performance Shaders), on macOS

    @staticmethod
    def from_platform(system: str, cuda_available: bool, mps_available: bool) -> DeviceFacts:
        """``system`` as ``platform.system()`` says it; the availabilities as torch reports them."""
        return DeviceFacts(cuda=cuda_available, mps=system == "Darwin" and mps_available)

    @staticmethod
    def probe() -> DeviceFacts:
        mps = getattr(torch.backends, "mps", None)
        return DeviceFacts.from_platform(platform.system(), torch.cuda.is_available(),
                                         bool(mps is not None and mps.is_available()))


def check_device_choice(choice: str) -> None:
    """``ValueError`` unless ``choice`` is one of DEVICE_CHOICES or ``cuda:N``."""
    if choice not in DEVICE_CHOICES and not (choice.startswith("cuda:") and choice[5:].isdigit()):
        raise ValueError(f"unknown device {choice!r}; expected one of {', '.join(DEVICE_CHOICES)}")


def wants_cuda(choice: str, cuda: bool) -> bool:
    """Whether the work goes on the NVIDIA GPU: there is one (``cuda``) and ``choice`` allows it
    (``auto``, ``cuda``, ``cuda:N``)."""
    check_device_choice(choice)
    return cuda and (choice == "auto" or choice.startswith("cuda"))


def choose_device(choice: str, facts: DeviceFacts) -> str:
    """``choice`` -> the torch device name (``cpu``, ``cuda``, ``cuda:N``, ``mps``). ``auto``: CUDA
    when usable, else the Apple GPU on macOS when torch reports it, else the CPU. Asking for a
    device the machine lacks is a ``ValueError`` that says what to do instead."""
    check_device_choice(choice)
    if wants_cuda(choice, facts.cuda):
        return "cuda" if choice == "auto" else choice
    if choice.startswith("cuda"):
        raise ValueError(f"--device {choice}: no CUDA GPU is usable by this PyTorch build (torch "
                         f"{torch.__version__}); use --device cpu or install a CUDA build of torch")
    if choice == "mps" and not facts.mps:
        raise ValueError("--device mps: no Apple GPU (MPS) is usable here; it needs macOS on Apple silicon "
                         "and a torch build with MPS; use --device cpu")
    if choice == "mps" or (choice == "auto" and facts.mps):
        return "mps"
    return "cpu"


def resolve_device(choice: str = "auto", facts: DeviceFacts | None = None) -> torch.device:
    """``choose_device`` on this machine's facts (or the given ones), as a torch device."""
    return torch.device(choose_device(choice, facts or DeviceFacts.probe()))


# --------------------------------------------------------------------------- timing
def synchronize(device: torch.device) -> None:
    """Wait for queued device work so a timer measures it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def synced_ms(fn: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """``fn()`` and its milliseconds, with the device's queued work waited for before and after
    (the kernels are timed, not their launch)."""
    synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, (time.perf_counter() - t0) * 1000


def device_ms(fn: Callable[[], object], device: torch.device) -> float:
    """Milliseconds of ``fn()``: on CUDA between two events recorded on the stream around it (the
    device's time, without the host's wait), elsewhere as ``synced_ms``."""
    if device.type != "cuda":
        return synced_ms(fn, device)[1]
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    synchronize(device)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def median_ms(fn: Callable[[], object], device: torch.device, runs: int, warmup: int) -> float:
    """Median milliseconds (``device_ms``) of ``fn()`` over ``runs`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    return statistics.median(device_ms(fn, device) for _ in range(runs))


# --------------------------------------------------------------------------- waits
class HostReads(TorchDispatchMode):
    """Records every operation that reads a tensor's value into Python (``.item()``, ``float(t)``,
    ``bool(t)``, ``if t:``): on a GPU each of them waits for the device."""

    READS = (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.item.default,
             torch.ops.aten.is_nonzero.default)

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.READS:
            self.reads.append(str(func))
        return func(*args, **(kwargs or {}))


def device_waits(fn: Callable[[], T], device: torch.device) -> tuple[T, list[str]]:
    """``fn()`` and the waits for the device it made, one string each. On CUDA: every
    synchronising CUDA call (torch's sync debug mode), transfers to the host included. Elsewhere
    (nothing to wait for): every read of a tensor value into Python, each of which would wait on
    a GPU; a device -> host copy is not counted there."""
    if device.type != "cuda":
        with HostReads() as mode:
            out = fn()
        return out, mode.reads
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            out = fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return out, [str(w.message) for w in caught if "synchroniz" in str(w.message)]
