"""Unit tests for the motion extractor M, the SPADE generator G and the stitching/retargeting
MLPs: input validation, checkpoint layout (against the parity kit's manifest), spectral-norm
key conventions and the DDP-prefix remapping. The numerical parity run lives elsewhere."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from engines.models.motion_extractor import MotionExtractor
from engines.models.spade_generator import (
    SPADEGenerator,
    SpectralNormConv2d,
    remap_new_style_spectral_norm_keys,
)
from engines.models.stitching_retargeting import StitchingRetargetingMLP, strip_ddp_prefix

LEGACY_TO_NEW = {
    "weight_orig": "parametrizations.weight.original",
    "weight_u": "parametrizations.weight.0._u",
    "weight_v": "parametrizations.weight.0._v",
}


def _to_new_style(key: str) -> str:
    prefix, dot, leaf = key.rpartition(".")
    return f"{prefix}{dot}{LEGACY_TO_NEW[leaf]}" if leaf in LEGACY_TO_NEW else key


def _meta(factory):
    # parameters without storage: layout checks on the full-size networks stay cheap
    with torch.device("meta"):
        return factory()


def _manifest_entry(manifest: dict, name: str) -> dict:
    if name.startswith("retarget_"):
        return manifest["checkpoints"]["stitching_retargeting_module"]["submodules"][name]
    return manifest["checkpoints"][name]


# ----------------------------------------------------------------------------- input shapes
@pytest.mark.parametrize("shape", [(1, 3, 128, 128), (1, 4, 256, 256), (3, 256, 256), (1, 256, 256, 3)])
def test_motion_extractor_rejects_wrong_shape(shape):
    m = _meta(MotionExtractor)
    with pytest.raises(ValueError, match=r"Bx3x256x256"):
        m(torch.zeros(shape))


@pytest.mark.parametrize("shape", [(1, 256, 32, 32), (1, 512, 64, 64), (256, 64, 64)])
def test_spade_generator_rejects_wrong_shape(shape):
    g = _meta(SPADEGenerator)
    with pytest.raises(ValueError, match=r"Bx256x64x64"):
        g(torch.zeros(shape))


@pytest.mark.parametrize("factory,width", [
    (StitchingRetargetingMLP.stitching, 126),
    (StitchingRetargetingMLP.lip, 65),
    (StitchingRetargetingMLP.eye, 66),
])
def test_mlp_rejects_wrong_shape(factory, width):
    net = factory()
    for bad in ((2, width + 1), (width,), (2, 1, width)):
        with pytest.raises(ValueError, match=rf"Bx{width}\b"):
            net(torch.zeros(bad))


def test_mlp_forward_shapes():
    for factory, n_in, n_out in ((StitchingRetargetingMLP.stitching, 126, 65),
                                 (StitchingRetargetingMLP.lip, 65, 63),
                                 (StitchingRetargetingMLP.eye, 66, 63)):
        x = torch.randn(5, n_in)
        x0 = x.clone()
        y = factory().eval()(x)
        assert y.shape == (5, n_out)
        assert torch.equal(x, x0)  # the in-place ReLUs must not touch the caller's tensor


# ----------------------------------------------------------------------------- checkpoint layout
@pytest.mark.parametrize("name,factory", [
    ("motion_extractor", MotionExtractor),
    ("spade_generator", SPADEGenerator),
    ("retarget_shoulder", StitchingRetargetingMLP.stitching),
    ("retarget_mouth", StitchingRetargetingMLP.lip),
    ("retarget_eye", StitchingRetargetingMLP.eye),
])
def test_state_dict_matches_manifest(manifest, name, factory):
    entry = _manifest_entry(manifest, name)
    sd = _meta(factory).state_dict()
    want = [(t["key"], tuple(t["shape"]), t["dtype"]) for t in entry["tensors"]]
    got = [(k, tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in sd.items()]
    assert got == want  # same keys, shapes, dtypes, and registration order
    params = sum(v.numel() for k, v in sd.items() if not k.endswith(("weight_u", "weight_v")))
    assert params == entry["num_parameters"]


def test_manifest_spectral_norm_keys_roundtrip(manifest):
    keys = [t["key"] for t in manifest["checkpoints"]["spade_generator"]["tensors"]]
    new_style = {_to_new_style(k): None for k in keys}
    assert any(".parametrizations.weight." in k for k in new_style)
    assert list(remap_new_style_spectral_norm_keys(new_style)) == keys
    assert list(remap_new_style_spectral_norm_keys(dict.fromkeys(keys))) == keys  # legacy: unchanged


# ----------------------------------------------------------------------------- spectral norm
def _non_unit_sn_state(conv: nn.Module, gen: torch.Generator) -> None:
    # like the parity kit's synthetic weights: u, v deliberately NOT unit vectors
    with torch.no_grad():
        for t in conv.state_dict(keep_vars=True).values():
            t.copy_(torch.rand(t.shape, generator=gen) * 2 - 1)


def test_spectral_norm_conv_matches_torch_legacy_and_parametrization():
    gen = torch.Generator().manual_seed(0)
    ours = SpectralNormConv2d(6, 5, kernel_size=3, padding=1).eval()
    _non_unit_sn_state(ours, gen)
    x = torch.randn(2, 6, 9, 9, generator=gen)
    expected = ours(x)
    sd = ours.state_dict()

    legacy = torch.nn.utils.spectral_norm(nn.Conv2d(6, 5, 3, padding=1)).eval()
    assert set(legacy.state_dict()) == set(sd)
    legacy.load_state_dict(sd, strict=True)
    torch.testing.assert_close(legacy(x), expected, rtol=1e-6, atol=1e-6)

    new = torch.nn.utils.parametrizations.spectral_norm(nn.Conv2d(6, 5, 3, padding=1)).eval()
    new_keys = {_to_new_style(k) for k in sd}
    assert set(new.state_dict()) == new_keys  # our notion of the new-style names is torch's
    new.load_state_dict({_to_new_style(k): v for k, v in sd.items()}, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(new(x), expected, rtol=1e-6, atol=1e-6)

    back = SpectralNormConv2d(6, 5, kernel_size=3, padding=1).eval()
    back.load_state_dict(remap_new_style_spectral_norm_keys(new.state_dict()), strict=True)
    assert torch.equal(back(x), expected)


def _tiny_generator() -> SPADEGenerator:
    return SPADEGenerator(block_expansion=4, max_features=8, out_channels=4,
                          num_middle_blocks=2, spade_hidden=8, feature_size=8).eval()


def test_spade_generator_loads_legacy_and_new_style_keys():
    gen = torch.Generator().manual_seed(1)
    ref = _tiny_generator()
    _non_unit_sn_state(ref, gen)
    legacy_sd = ref.state_dict()
    assert any(k.endswith(".weight_orig") for k in legacy_sd)
    new_sd = {_to_new_style(k): v.clone() for k, v in legacy_sd.items()}
    assert not any(k.endswith((".weight_orig", ".weight_u", ".weight_v")) for k in new_sd)

    g_legacy, g_new = _tiny_generator(), _tiny_generator()
    g_legacy.load_state_dict(remap_new_style_spectral_norm_keys(legacy_sd), strict=True)
    g_new.load_state_dict(remap_new_style_spectral_norm_keys(new_sd), strict=True)
    with pytest.raises(RuntimeError):
        _tiny_generator().load_state_dict(new_sd, strict=True)  # the remap is what makes it load

    x = torch.rand(2, g_legacy.in_channels, 8, 8, generator=gen)
    with torch.no_grad():
        y_legacy, y_new = g_legacy(x), g_new(x)
    assert y_legacy.shape == (2, 3, 64, 64)
    assert torch.equal(y_legacy, y_new)
    assert float(y_legacy.min()) >= 0.0 and float(y_legacy.max()) <= 1.0


# ----------------------------------------------------------------------------- DDP prefix
def test_strip_ddp_prefix():
    net = StitchingRetargetingMLP.lip()
    plain = net.state_dict()
    prefixed = {"module." + k: v for k, v in plain.items()}
    assert list(strip_ddp_prefix(prefixed)) == list(plain)
    assert list(strip_ddp_prefix(plain)) == list(plain)  # no prefix: unchanged
    # every occurrence goes, like the official key.replace('module.', '')
    assert list(strip_ddp_prefix({"module.module.mlp.0.weight": 0, "a.module.b": 1})) == ["mlp.0.weight", "a.b"]

    other = StitchingRetargetingMLP.lip()
    other.load_state_dict(strip_ddp_prefix(prefixed), strict=True)
    x = torch.randn(3, 65)
    assert torch.equal(other(x), net(x))
    with pytest.raises(RuntimeError):
        StitchingRetargetingMLP.lip().load_state_dict(prefixed, strict=True)
