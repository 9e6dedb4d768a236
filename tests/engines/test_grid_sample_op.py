"""The custom op ``avatarcam::grid_sample_3d`` (engines/ops/grid_sample3d.py).

CPU: the plain-torch reference against ``F.grid_sample`` (fp32, fp64, out-of-range and exact
boundary coordinates), registration, fake/meta shape propagation, torch.export, the switch used
by W, the CUDA fallback logic, and ONNX export (dynamo and TorchScript exporters) run with ONNX
Runtime. CUDA/Triton: skipped without a GPU. Gradients are not tested: the op is inference-only
(no autograd formula; backward raises).
"""
from __future__ import annotations

import importlib.util
import io
import logging
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import support
import torch
import torch.nn.functional as F
from torch import nn

from engines.ops import (
    ONNX_OPSET,
    grid_sample_3d_or_reference,
    onnx_translation_table,
    register_torchscript_onnx_symbolic,
    use_custom_grid_sample,
)
from engines.ops import grid_sample3d as gs

REPO_ROOT = str(support.REPO_ROOT)
W_SHAPE = ((1, 32, 16, 64, 64), (1, 16, 64, 64, 3))     # W's warp: feature volume and flow
CUDA = support.needs_cuda()
TRITON = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")


def op(input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return torch.ops.avatarcam.grid_sample_3d(input, grid)


def aten(input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_case(in_shape: tuple[int, ...], grid_shape: tuple[int, ...], dtype: torch.dtype = torch.float32,
                spread: float = 1.6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ~ N(0, 1); coordinates uniform in [-spread, spread] (beyond [-1, 1] on purpose)."""
    gen = torch.Generator().manual_seed(seed)
    feature = torch.randn(in_shape, generator=gen, dtype=torch.float64)
    grid = (torch.rand(grid_shape, generator=gen, dtype=torch.float64) * 2 - 1) * spread
    return feature.to(dtype), grid.to(dtype)


def boundary_grid(sizes: tuple[int, int, int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Every combination of special coordinates: exact -1 / 1, just inside and outside them, voxel
    centres, half a voxel outside (where the edge weight reaches 0), and huge values."""
    eps = 1e-6 if dtype == torch.float32 else 1e-12
    per_axis = []
    for size in sizes:
        centres = [(2 * k + 1) / size - 1 for k in range(size)]
        outside = [-1 - 1 / size, 1 + 1 / size, -1 - 2 / size, 1 + 2 / size]
        special = [-1.0, 1.0, -1 + eps, 1 - eps, -1 - eps, 1 + eps, 0.0, -3.0, 3.0, 1e6, -1e6, 1e30]
        per_axis.append(torch.tensor(special + centres[:3] + centres[-2:] + outside, dtype=dtype))
    d_values, h_values, w_values = per_axis
    z, y, x = torch.meshgrid(d_values, h_values, w_values, indexing="ij")
    return torch.stack([x, y, z], dim=-1).unsqueeze(0)          # 1 x Do x Ho x Wo x 3 as (x, y, z)


# --------------------------------------------------------------------------- registration
def test_op_is_registered() -> None:
    assert hasattr(torch.ops.avatarcam, "grid_sample_3d")
    overload = torch.ops.avatarcam.grid_sample_3d.default
    assert "avatarcam::grid_sample_3d(Tensor input, Tensor grid) -> Tensor" in str(overload._schema)


# --------------------------------------------------------------------------- CPU reference
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("in_shape,grid_shape", [
    ((1, 3, 4, 5, 6), (1, 7, 8, 9, 3)),
    ((2, 2, 5, 3, 7), (2, 4, 1, 6, 3)),      # batch 2, grid of another size than the input
    ((3, 1, 1, 1, 1), (3, 2, 3, 4, 3)),      # single voxel: every sample is an edge case
    ((1, 5, 2, 9, 1), (1, 3, 3, 3, 3)),
])
def test_cpu_matches_grid_sample_random(dtype: torch.dtype, tol: float, in_shape: tuple[int, ...],
                                        grid_shape: tuple[int, ...]) -> None:
    feature, grid = random_case(in_shape, grid_shape, dtype)
    out = op(feature, grid)
    assert out.dtype == dtype and out.shape == aten(feature, grid).shape and out.is_contiguous()
    assert (out - aten(feature, grid)).abs().max().item() <= tol


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_cpu_matches_grid_sample_at_boundaries(dtype: torch.dtype, tol: float) -> None:
    feature, _ = random_case((2, 3, 4, 5, 6), (1, 1, 1, 1, 3), dtype)
    grid = boundary_grid((4, 5, 6), dtype).expand(2, -1, -1, -1, -1).contiguous()
    assert (op(feature, grid) - aten(feature, grid)).abs().max().item() <= tol


def test_cpu_matches_grid_sample_on_w_shape() -> None:
    feature, grid = random_case(*W_SHAPE, spread=1.1)
    assert (op(feature, grid) - aten(feature, grid)).abs().max().item() <= 1e-5


def test_cpu_accepts_non_contiguous_inputs() -> None:
    feature, grid = random_case((2, 3, 6, 5, 4), (2, 4, 5, 6, 3))
    feature_t = feature.transpose(2, 4)                         # N x C x 4 x 5 x 6, strided
    grid_t = grid.transpose(1, 3)                               # N x 6 x 5 x 4 x 3, strided
    assert (op(feature_t, grid_t) - aten(feature_t, grid_t)).abs().max().item() <= 1e-5


def test_fp16_features_use_fp32_coordinates() -> None:
    feature, grid = random_case((1, 4, 5, 6, 7), (1, 3, 4, 5, 3))
    out = op(feature.half(), grid)                              # fp16 features, fp32 grid
    expected = aten(feature.half().float(), grid)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), expected, rtol=2e-3, atol=2e-3)


def test_bad_shapes_are_value_errors() -> None:
    feature, grid = random_case((2, 3, 4, 5, 6), (2, 3, 4, 5, 3))
    with pytest.raises(ValueError, match="grid must be"):
        op(feature, grid[..., :2])
    with pytest.raises(ValueError, match="grid must be"):
        op(feature, grid[:1])
    with pytest.raises(ValueError, match="input must be"):
        op(feature[:, :, 0], grid)


def test_backward_is_not_supported() -> None:
    """Inference-only op: no autograd formula is registered, so backward fails loudly."""
    feature, grid = random_case((1, 2, 3, 4, 5), (1, 2, 3, 4, 3))
    out = op(feature.requires_grad_(), grid)
    with pytest.raises(RuntimeError, match="autograd"):
        out.sum().backward()


# --------------------------------------------------------------------------- tracing
def test_meta_and_fake_tensors_propagate_shapes() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    meta = op(torch.empty(2, 3, 4, 5, 6, device="meta"), torch.empty(2, 7, 8, 9, 3, device="meta"))
    assert meta.device.type == "meta" and meta.shape == (2, 3, 7, 8, 9)
    with FakeTensorMode():
        fake = op(torch.empty(2, 3, 4, 5, 6, dtype=torch.float16), torch.empty(2, 7, 8, 9, 3))
    assert fake.shape == (2, 3, 7, 8, 9) and fake.dtype == torch.float16


def test_opcheck_schema_and_fake_kernel() -> None:
    feature, grid = random_case((2, 3, 4, 5, 6), (2, 3, 4, 5, 3))
    result = torch.library.opcheck(torch.ops.avatarcam.grid_sample_3d.default, (feature, grid),
                                   test_utils=("test_schema", "test_faketensor"))
    assert set(result.values()) == {"SUCCESS"}


class Warp(nn.Module):
    """A tiny stand-in for W's warp, with ops around the sampler."""

    def __init__(self, use_custom: bool = True) -> None:
        super().__init__()
        self.use_custom = use_custom

    def forward(self, feature: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        return grid_sample_3d_or_reference(feature * 2.0, grid, self.use_custom) + 1.0


def exported_targets(module: nn.Module, args: tuple[torch.Tensor, ...]) -> list:
    program = torch.export.export(module, args)
    return [node.target for node in program.graph.nodes if node.op == "call_function"]


def test_torch_export_keeps_the_op_with_its_shape() -> None:
    feature, grid = random_case((1, 3, 4, 5, 6), (1, 2, 3, 4, 3))
    program = torch.export.export(Warp(), (feature, grid))
    nodes = [n for n in program.graph.nodes if n.target == torch.ops.avatarcam.grid_sample_3d.default]
    assert len(nodes) == 1 and nodes[0].meta["val"].shape == (1, 3, 2, 3, 4)


def test_switch_selects_the_implementation() -> None:
    feature, grid = random_case((1, 3, 4, 5, 6), (1, 2, 3, 4, 3))
    custom = torch.ops.avatarcam.grid_sample_3d.default
    assert custom in exported_targets(Warp(True), (feature, grid))
    assert custom not in exported_targets(Warp(False), (feature, grid))

    class Switched(nn.Module):
        def forward(self, feature: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
            return grid_sample_3d_or_reference(feature, grid)      # use_custom=None: the switch

    assert custom not in exported_targets(Switched(), (feature, grid))
    with use_custom_grid_sample(True):
        assert custom in exported_targets(Switched(), (feature, grid))
    assert not gs.custom_grid_sample_enabled()
    torch.testing.assert_close(Warp(True)(feature, grid), Warp(False)(feature, grid), rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- CUDA dispatch logic
def test_cuda_kernel_falls_back_without_triton(monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """The CUDA kernel's decision logic, run on CPU tensors: Triton cannot be imported -> one
    warning and F.grid_sample's result."""
    monkeypatch.setattr(gs._TritonState, "loaded", False)
    monkeypatch.setattr(gs._TritonState, "launcher", None)
    monkeypatch.setitem(sys.modules, "engines.ops._triton_grid_sample3d", None)   # import fails
    feature, grid = random_case((1, 3, 4, 5, 6), (1, 2, 3, 4, 3))
    with caplog.at_level(logging.WARNING, logger=gs.__name__):
        out = gs._cuda_impl(feature, grid)
        gs._cuda_impl(feature, grid)
    torch.testing.assert_close(out, aten(feature, grid), rtol=0, atol=0)
    assert sum("Triton is not available" in r.getMessage() for r in caplog.records) == 1


def test_cuda_kernel_falls_back_when_triton_fails_first(monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    def broken(input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("cannot compile")

    monkeypatch.setattr(gs._TritonState, "loaded", True)
    monkeypatch.setattr(gs._TritonState, "verified", False)
    monkeypatch.setattr(gs._TritonState, "launcher", broken)
    feature, grid = random_case((1, 3, 4, 5, 6), (1, 2, 3, 4, 3))
    with caplog.at_level(logging.WARNING, logger=gs.__name__):
        out = gs._cuda_impl(feature, grid)
    torch.testing.assert_close(out, aten(feature, grid), rtol=0, atol=0)
    assert gs._TritonState.launcher is None
    assert any("failed on first use" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- ONNX
def onnx_runtime_output(model_bytes: bytes, feature: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return torch.from_numpy(session.run(None, {names[0]: feature.numpy(), names[1]: grid.numpy()})[0])


def assert_standard_grid_sample(model: object) -> None:
    """One GridSample of the default domain, opset 20, trilinear / zeros / align_corners=0."""
    nodes = [n for n in model.graph.node if n.op_type == "GridSample"]
    assert len(nodes) == 1 and nodes[0].domain == ""
    assert not [n for n in model.graph.node if "avatarcam" in n.op_type or n.domain not in ("", "ai.onnx")]
    attrs = {a.name: a for a in nodes[0].attribute}
    assert attrs["mode"].s == b"linear" and attrs["padding_mode"].s == b"zeros"
    assert attrs["align_corners"].i == 0
    assert {o.domain: o.version for o in model.opset_import}.get("", 0) == ONNX_OPSET


def test_onnx_dynamo_export_emits_grid_sample() -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    feature, grid = random_case((1, 4, 5, 6, 7), (1, 3, 4, 5, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(Warp().eval(), (feature, grid), dynamo=True, opset_version=ONNX_OPSET,
                                    custom_translation_table=onnx_translation_table(), verbose=False)
    model = program.model_proto
    assert_standard_grid_sample(model)
    out = onnx_runtime_output(model.SerializeToString(), feature, grid)
    assert (out - Warp(False)(feature, grid)).abs().max().item() <= 1e-5


def test_onnx_torchscript_export_emits_grid_sample() -> None:
    onnx = pytest.importorskip("onnx")
    register_torchscript_onnx_symbolic()
    feature, grid = random_case((1, 4, 5, 6, 7), (1, 3, 4, 5, 3), seed=1)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")           # the legacy exporter is deprecated upstream
        torch.onnx.export(Warp().eval(), (feature, grid), buffer, dynamo=False, opset_version=ONNX_OPSET)
    model = onnx.load_from_string(buffer.getvalue())
    assert_standard_grid_sample(model)
    out = onnx_runtime_output(buffer.getvalue(), feature, grid)
    assert (out - Warp(False)(feature, grid)).abs().max().item() <= 1e-5


# --------------------------------------------------------------------------- Triton / CUDA
@TRITON
@pytest.mark.integration
def test_triton_kernel_in_interpreter() -> None:
    """The kernel's arithmetic on CPU through Triton's interpreter (where Triton is installed)."""
    script = textwrap.dedent("""
        import torch, torch.nn.functional as F
        from engines.ops._triton_grid_sample3d import launch_grid_sample_3d
        from tests.engines.test_grid_sample_op import boundary_grid, random_case
        worst = 0.0
        for in_shape, grid_shape in [((2, 3, 5, 7, 9), (2, 4, 6, 8, 3)), ((1, 32, 2, 8, 8), (1, 2, 8, 8, 3))]:
            feature, grid = random_case(in_shape, grid_shape)
            ref = F.grid_sample(feature, grid, align_corners=False)
            worst = max(worst, (launch_grid_sample_3d(feature, grid) - ref).abs().max().item())
        feature, _ = random_case((1, 3, 4, 5, 6), (1, 1, 1, 1, 3))
        grid = boundary_grid((4, 5, 6))
        ref = F.grid_sample(feature, grid, align_corners=False)
        worst = max(worst, (launch_grid_sample_3d(feature, grid) - ref).abs().max().item())
        print(worst)
    """)
    pythonpath = os.pathsep.join(p for p in (REPO_ROOT, f"{REPO_ROOT}/tests", os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=pythonpath)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.strip().splitlines()[-1]) <= 1e-5


@CUDA
@TRITON
def test_cuda_uses_triton() -> None:
    assert gs.triton_available()


@CUDA
@pytest.mark.parametrize("in_shape,grid_shape", [W_SHAPE, ((22, 4, 16, 64, 64), (22, 16, 64, 64, 3)),
                                                 ((2, 3, 5, 7, 9), (2, 4, 6, 8, 3))])
def test_cuda_fp32_matches_grid_sample(in_shape: tuple[int, ...], grid_shape: tuple[int, ...]) -> None:
    feature, grid = (t.cuda() for t in random_case(in_shape, grid_shape))
    out = op(feature, grid)
    assert out.dtype == torch.float32 and out.is_cuda and out.is_contiguous()
    assert (out - aten(feature, grid)).abs().max().item() <= 1e-5


@CUDA
def test_cuda_fp32_matches_grid_sample_at_boundaries() -> None:
    feature, _ = random_case((2, 3, 4, 5, 6), (1, 1, 1, 1, 3))
    grid = boundary_grid((4, 5, 6)).expand(2, -1, -1, -1, -1).contiguous()
    feature, grid = feature.cuda(), grid.cuda()
    assert (op(feature, grid) - aten(feature, grid)).abs().max().item() <= 1e-5


@CUDA
def test_cuda_fp16_features_with_fp32_coordinates() -> None:
    feature, grid = (t.cuda() for t in random_case(*W_SHAPE, spread=1.1))
    out = op(feature.half(), grid)
    assert out.dtype == torch.float16
    expected = aten(feature.half().float(), grid)                # fp32 reference on the same features
    torch.testing.assert_close(out.float(), expected, rtol=2e-3, atol=2e-3)


@CUDA
def test_cuda_fp64_uses_aten() -> None:
    feature, grid = (t.cuda() for t in random_case((1, 3, 4, 5, 6), (1, 2, 3, 4, 3), torch.float64))
    assert (op(feature, grid) - aten(feature, grid)).abs().max().item() <= 1e-12
