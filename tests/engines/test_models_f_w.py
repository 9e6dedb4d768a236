"""Appearance feature extractor (F) and warping module (W): checkpoint layout, input
validation and a cheap forward smoke test. Numerical parity with the official modules is
checked separately with the parity kit."""
from __future__ import annotations

import inspect
import re

import pytest
import torch

from engines.models import build
from engines.models.appearance_feature_extractor import AppearanceFeatureExtractor
from engines.models.blocks3d import make_coordinate_grid
from engines.models.warping_network import WarpingNetwork

NETS = {
    "appearance_feature_extractor": AppearanceFeatureExtractor,
    "warping_module": WarpingNetwork,
}


@pytest.fixture(scope="module")
def full_models() -> dict:
    return {name: build(name) for name in NETS}


def _tiny_f() -> AppearanceFeatureExtractor:
    return AppearanceFeatureExtractor(block_expansion=8, num_down_blocks=2, max_features=32,
                                      reshape_channel=4, reshape_depth=8, num_resblocks=1).eval()


def _tiny_w() -> WarpingNetwork:
    return WarpingNetwork(num_kp=3, block_expansion=4, max_features=32, num_down_blocks=1, reshape_channel=4,
                          dense_motion_params=dict(block_expansion=4, max_features=16, num_blocks=2,
                                                   reshape_depth=8, compress=2)).eval()


# --------------------------------------------------------------------------- checkpoint layout
@pytest.mark.parametrize("name", list(NETS))
def test_state_dict_matches_manifest(name: str, manifest: dict, full_models: dict) -> None:
    expected = [(t["key"], tuple(t["shape"]), t["dtype"]) for t in manifest["checkpoints"][name]["tensors"]]
    got = [(k, tuple(v.shape), str(v.dtype).replace("torch.", ""))
           for k, v in full_models[name].state_dict().items()]
    assert got == expected


@pytest.mark.parametrize("name", list(NETS))
def test_constructor_defaults_match_manifest(name: str, manifest: dict) -> None:
    params = manifest["checkpoints"][name]["constructor_params"]
    sig = inspect.signature(NETS[name])
    for key, value in params.items():
        default = sig.parameters[key].default
        if key == "dense_motion_params" and default is None:
            from engines.models.warping_network import DEFAULT_DENSE_MOTION_PARAMS
            default = dict(DEFAULT_DENSE_MOTION_PARAMS)
        assert default == value, key


@pytest.mark.parametrize("name", list(NETS))
def test_a_state_dict_in_the_official_layout_loads_strictly(name: str, manifest: dict) -> None:
    """Tensors made from the official files' keys, shapes and dtypes (the kit's manifest, not our
    own state dict) load with ``strict=True``; one key missing is refused by name."""
    official = {t["key"]: torch.zeros(t["shape"], dtype=getattr(torch, t["dtype"]))
                for t in manifest["checkpoints"][name]["tensors"]}
    build(name).load_state_dict(official, strict=True)
    dropped = next(iter(official))
    with pytest.raises(RuntimeError, match=re.escape(dropped)):
        build(name).load_state_dict({k: v for k, v in official.items() if k != dropped}, strict=True)


# --------------------------------------------------------------------------- input validation
@pytest.mark.parametrize("shape", [(1, 3, 128, 128), (3, 256, 256), (1, 4, 256, 256)])
def test_f_rejects_wrong_shape(shape: tuple) -> None:
    with pytest.raises(ValueError, match="Bx3x256x256"):
        _tiny_f()(torch.zeros(shape))


def test_f_rejects_non_tensor() -> None:
    with pytest.raises(ValueError):
        _tiny_f()([[0.0]])


def test_w_rejects_wrong_feature_shape(full_models: dict) -> None:
    w = full_models["warping_module"]
    kp = torch.zeros(1, 21, 3)
    with pytest.raises(ValueError, match="Bx32x16x64x64"):
        w(feature_3d=torch.zeros(1, 32, 16, 32, 32), kp_source=kp, kp_driving=kp)
    with pytest.raises(ValueError, match="Bx32x16x64x64"):
        w(feature_3d=torch.zeros(1, 512, 64, 64), kp_source=kp, kp_driving=kp)


@pytest.mark.parametrize("bad", [(1, 63), (1, 20, 3), (2, 21, 3), (1, 21, 2)])
def test_w_rejects_wrong_kp_shape(full_models: dict, bad: tuple) -> None:
    w = full_models["warping_module"]
    feat = torch.zeros(1, 32, 16, 64, 64)
    good = torch.zeros(1, 21, 3)
    with pytest.raises(ValueError, match="1x21x3"):
        w(feature_3d=feat, kp_source=torch.zeros(bad), kp_driving=good)
    with pytest.raises(ValueError, match="1x21x3"):
        w(feature_3d=feat, kp_source=good, kp_driving=torch.zeros(bad))


# --------------------------------------------------------------------------- smoke forwards (tiny configs)
def test_f_forward_shape() -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        out = _tiny_f()(torch.rand(2, 3, 256, 256))
    assert out.shape == (2, 4, 8, 64, 64)
    assert torch.isfinite(out).all()


def test_w_forward_shapes_and_identity_motion() -> None:
    torch.manual_seed(0)
    w = _tiny_w()
    feat = torch.randn(2, 4, 8, 64, 64)
    kp = torch.rand(2, 3, 3) * 2 - 1
    with torch.no_grad():
        res = w(feature_3d=feat, kp_source=kp, kp_driving=kp)
    assert res["occlusion_map"].shape == (2, 1, 64, 64)
    assert res["deformation"].shape == (2, 8, 64, 64, 3)
    assert res["out"].shape == (2, 8, 64, 64)
    occ = res["occlusion_map"]
    assert bool(((occ > 0) & (occ < 1)).all())
    # equal source and driving keypoints: every candidate motion is the identity grid, and the
    # softmax mask sums to one, so the blended flow must be the identity grid as well
    ident = make_coordinate_grid((8, 64, 64), feat).expand(2, 8, 64, 64, 3)
    torch.testing.assert_close(res["deformation"], ident, atol=1e-5, rtol=0)


def test_w_keyword_order_matters() -> None:
    # the call convention is keywords; swapping source and driving must change the flow
    torch.manual_seed(1)
    w = _tiny_w()
    feat = torch.randn(1, 4, 8, 64, 64)
    ks, kd = torch.rand(1, 3, 3) - 0.5, torch.rand(1, 3, 3) - 0.5
    with torch.no_grad():
        a = w(feature_3d=feat, kp_source=ks, kp_driving=kd)["deformation"]
        b = w(feature_3d=feat, kp_source=kd, kp_driving=ks)["deformation"]
    assert not torch.allclose(a, b)


def test_coordinate_grid_convention() -> None:
    g = make_coordinate_grid((16, 64, 64), torch.zeros(()))
    assert g.shape == (16, 64, 64, 3)
    # (N-1) normalisation: the corners are exactly -1 and +1; channel order (x->W, y->H, z->D)
    assert g[0, 0, 0].tolist() == [-1.0, -1.0, -1.0]
    assert g[-1, -1, -1].tolist() == [1.0, 1.0, 1.0]
    assert g[0, 0, 1, 0] > -1 and g[0, 0, 1, 1] == -1 and g[0, 0, 1, 2] == -1
    assert g[0, 1, 0, 1] > -1 and g[1, 0, 0, 2] > -1
