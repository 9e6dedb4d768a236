"""Choosing the torch device."""
from __future__ import annotations

import torch

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
