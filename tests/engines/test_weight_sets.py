"""The animal weight set through the checkpoint loader and ``make_backend``, on the kit's synthetic
files linked into the animal layout (``synthetic_animal_weights_dir``): the same bytes as the human
set, so the networks must come out equal to the human ones, read from the animal paths only."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engines import registry
from engines.backend import TorchBackend
from engines.checkpoints import CheckpointError, LivePortraitNetworks, load_networks
from engines.select import onnx_graphs_verified
from engines.weights import LIVEPORTRAIT_ANIMALS, weights_fingerprint

pytestmark = pytest.mark.integration


def assert_same_networks(a: LivePortraitNetworks, b: LivePortraitNetworks) -> None:
    for name in LivePortraitNetworks.__dataclass_fields__:
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys(), name
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name


def test_make_backend_loads_the_animal_layout(synthetic_animal_weights_dir: Path, synthetic_weights_dir: Path) -> None:
    backend = registry.make_backend("torch", weights=synthetic_animal_weights_dir, device="cpu", download=False,
                                    weight_set="animal")
    try:
        assert isinstance(backend, TorchBackend) and backend.name == "torch-cpu"
        assert_same_networks(backend.nets, load_networks(synthetic_weights_dir))
    finally:
        backend.close()


def test_the_human_set_is_not_read_from_the_animal_layout(synthetic_animal_weights_dir: Path) -> None:
    with pytest.raises(CheckpointError, match=r"liveportrait/base_models/appearance_feature_extractor\.pth: "
                                              "file not found"):
        load_networks(synthetic_animal_weights_dir)
    # the loader is told the set by object or by name alike (F alone: the first file read)
    with pytest.raises(CheckpointError, match="file not found"):
        load_networks(synthetic_animal_weights_dir / "elsewhere", weight_set=LIVEPORTRAIT_ANIMALS)


def test_human_graphs_never_count_for_the_animal_set(exported_onnx, synthetic_weights_dir: Path,
                                                      synthetic_animal_weights_dir: Path) -> None:
    """Identical bytes, other paths: the fingerprints differ, so the human export is not the animal one."""
    assert weights_fingerprint(synthetic_animal_weights_dir, "animal") != weights_fingerprint(synthetic_weights_dir)
    assert onnx_graphs_verified(exported_onnx.out_dir, synthetic_weights_dir)
    assert not onnx_graphs_verified(exported_onnx.out_dir, synthetic_animal_weights_dir, "animal")
