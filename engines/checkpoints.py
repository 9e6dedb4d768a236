"""Loading the official LivePortrait checkpoint files into our networks.

The state-dict layout of the official files is an interface: the four base files are plain
state dicts; ``stitching_retargeting_module.pth`` holds three sub-state-dicts whose keys may carry
a DDP ``module.`` prefix. Remapping functions (named as such) translate other spellings of the
same tensors. A file that cannot be read, or whose keys or shapes do not match, is rejected as a
whole with a ``CheckpointError`` naming it: no network is ever half-loaded.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .models import build
from .models.spade_generator import remap_new_style_spectral_norm_keys
from .models.stitching_retargeting import strip_ddp_prefix
from .weights import CHECKPOINT_FILES, LIVEPORTRAIT, WeightSet, as_weight_set, checkpoint_path

log = logging.getLogger(__name__)

BASE_NETWORKS = ("appearance_feature_extractor", "motion_extractor", "warping_module", "spade_generator")
# sub-state-dict entry in the stitching file -> network name
STITCHING_ENTRIES = {"retarget_shoulder": "stitching", "retarget_mouth": "lip", "retarget_eye": "eye"}


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable or does not match the official layout."""


def read_checkpoint(path: str | Path) -> Mapping[str, Any]:
    """``torch.load`` restricted to tensors and plain containers (``weights_only``), on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - zip, pickle and I/O errors all mean the same thing here
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, probably truncated or corrupt "
                              f"({reason}); delete it and download it again") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return obj


def _same_shape(stored: torch.Size, expected: torch.Size) -> bool:
    # torch accepts a 1-element vector for a 0-dim entry (old files store num_batches_tracked so).
    return stored == expected or (len(expected) == 0 and tuple(stored) == (1,))


def _load_into(module: nn.Module, state_dict: Mapping[str, Any], source: str) -> nn.Module:
    """Strictly load ``state_dict`` into a fresh ``module``; keys and shapes are checked before any
    tensor is copied."""
    if not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{source}: state dict holds non-tensor values")
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [f"{k} {tuple(state_dict[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state_dict and not _same_shape(state_dict[k].shape, v.shape)]
    if missing or unexpected or wrong:
        def few(items: list[str]) -> str:
            return ", ".join(items[:3]) + (f" (+{len(items) - 3} more)" if len(items) > 3 else "")
        parts = [f"missing keys {few(missing)}" if missing else "",
                 f"unexpected keys {few(unexpected)}" if unexpected else "",
                 f"wrong shapes {few(wrong)}" if wrong else ""]
        raise CheckpointError(f"{source}: does not match the official layout: " + "; ".join(p for p in parts if p))
    module.load_state_dict(state_dict, strict=True)
    return module.eval()


def remap_base_checkpoint(name: str, state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Accepted spellings of a base checkpoint -> the official one (G saved with the new-style
    spectral-norm parametrisation is renamed to the legacy keys)."""
    if name == "spade_generator":
        return remap_new_style_spectral_norm_keys(state_dict)
    return dict(state_dict)


def load_base_network(name: str, path: str | Path) -> nn.Module:
    """One of the four base networks from its official ``.pth`` file (CPU, eval mode)."""
    if name not in BASE_NETWORKS:
        raise ValueError(f"unknown base network {name!r}; expected one of {', '.join(BASE_NETWORKS)}")
    sd = remap_base_checkpoint(name, read_checkpoint(path))
    return _load_into(build(name), sd, str(path))


def load_stitching_file(path: str | Path) -> dict[str, nn.Module]:
    """The stitching file -> ``{'stitching': S, 'lip': R_lip, 'eye': R_eye}``. Other top-level
    entries are ignored, like the official loader does."""
    ckpt = read_checkpoint(path)
    nets: dict[str, nn.Module] = {}
    for entry, short in STITCHING_ENTRIES.items():
        if entry not in ckpt:
            raise CheckpointError(f"{path}: entry {entry!r} missing (found {', '.join(map(str, ckpt))})")
        sub = ckpt[entry]
        if not isinstance(sub, Mapping):
            raise CheckpointError(f"{path}: entry {entry!r} is not a state dict")
        nets[short] = _load_into(build(entry), strip_ddp_prefix(sub), f"{path} [{entry}]")
    return nets


def load_liveportrait_file(path: str | Path) -> nn.Module | dict[str, nn.Module]:
    """Load an official checkpoint file by its file name (the parity kit's ``--loader`` hook)."""
    stem = Path(path).stem
    if stem == "stitching_retargeting_module":
        return load_stitching_file(path)
    if stem in BASE_NETWORKS:
        return load_base_network(stem, path)
    raise CheckpointError(f"{path}: not a LivePortrait checkpoint name "
                          f"(expected one of {', '.join(Path(p).name for p in CHECKPOINT_FILES.values())})")


@dataclass
class LivePortraitNetworks:
    """The seven networks, loaded and in eval mode."""

    appearance: nn.Module   # F
    motion: nn.Module       # M
    warping: nn.Module      # W
    generator: nn.Module    # G
    stitching: nn.Module    # S
    lip: nn.Module          # R_lip
    eye: nn.Module          # R_eyes

    def to(self, device: torch.device | str) -> LivePortraitNetworks:
        for f in self.__dataclass_fields__:
            getattr(self, f).to(device)
        return self


def load_networks(weights_dir: str | Path, device: torch.device | str = "cpu",
                  weight_set: WeightSet | str = LIVEPORTRAIT) -> LivePortraitNetworks:
    """All seven networks of ``weight_set`` (a ``WeightSet`` or its name in ``WEIGHT_SETS``: the
    human set by default, or the animal F, M, W, G with the human stitching file) from a weights
    directory in the official layout."""
    weights_dir = Path(weights_dir)
    weight_set = as_weight_set(weight_set)
    base = {}
    for name in BASE_NETWORKS:
        path = checkpoint_path(weights_dir, name, weight_set)
        log.debug("loading %s", path)
        base[name] = load_base_network(name, path)
    mlps = load_stitching_file(checkpoint_path(weights_dir, "stitching_retargeting_module", weight_set))
    nets = LivePortraitNetworks(
        appearance=base["appearance_feature_extractor"], motion=base["motion_extractor"],
        warping=base["warping_module"], generator=base["spade_generator"],
        stitching=mlps["stitching"], lip=mlps["lip"], eye=mlps["eye"],
    )
    return nets.to(device)
