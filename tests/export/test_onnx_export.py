"""ONNX export (``python -m export onnx``), its verification, the fp16 graphs and the ONNX Runtime
backend, on the parity kit's synthetic weights. All graphs are exported once per test session (the
``exported_onnx`` fixture); most of the time goes to W+G: export, PyTorch reference, ONNX Runtime
fp32 and fp16 runs, and one more run through the backend."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from support import REPO_ROOT  # noqa: E402
from support.fakes import run_export  # noqa: E402

from engines import motion  # noqa: E402
from engines.backend import TorchBackend  # noqa: E402
from engines.backend_onnx import MANIFEST, OnnxModelError, OnnxRuntimeBackend  # noqa: E402
from engines.checkpoints import load_networks  # noqa: E402
from engines.graphs import GRAPH_SPECS  # noqa: E402
from engines.verification import compare_output  # noqa: E402
from export.onnx_export import (  # noqa: E402
    FP16_TOL,
    FP32_TOL,
    OPSET,
    ExportReport,
    file_sha256,
    weights_fingerprint,
)

pytestmark = pytest.mark.integration

FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
N_OUTPUTS = sum(len(s.outputs) for s in GRAPH_SPECS.values())      # 12


@pytest.fixture(scope="module")
def exported(exported_onnx: ExportReport) -> ExportReport:
    return exported_onnx


def _types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.value_info, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


# --------------------------------------------------------------------------- files and verification
def test_all_graphs_written_with_static_io_at_opset_20(exported: ExportReport) -> None:
    for spec in GRAPH_SPECS.values():
        for precision in ("fp32", "fp16"):
            path = exported.out_dir / spec.file(precision)
            model = onnx.load(str(path), load_external_data=False)
            assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= OPSET
            for values, expected in ((model.graph.input, spec.inputs), (model.graph.output, spec.outputs)):
                got = [(v.name, tuple(d.dim_value for d in v.type.tensor_type.shape.dim),
                        v.type.tensor_type.elem_type) for v in values]
                assert got == [(n, s, FLOAT) for n, s in expected], path.name


def test_warp_uses_standard_5d_grid_sample(exported: ExportReport) -> None:
    model = onnx.load(str(exported.out_dir / "warping_spade.onnx"))
    grid_samples = [n for n in model.graph.node if n.op_type == "GridSample"]
    assert len(grid_samples) == 2 and all(n.domain in ("", "ai.onnx") for n in grid_samples)
    types = onnx.shape_inference.infer_shapes(model).graph
    shapes = {v.name: len(v.type.tensor_type.shape.dim) for v in [*types.input, *types.value_info]}
    assert all(shapes[n.input[0]] == 5 and shapes[n.input[1]] == 5 for n in grid_samples)
    # spectral norm is folded into plain weights: no weight arithmetic left in the graph
    assert not [n for n in model.graph.node if n.op_type == "MatMul"]


def test_fp32_verification_passes_for_every_output(exported: ExportReport) -> None:
    fp32 = [c for c in exported.comparisons if c.precision == "fp32"]
    assert len(fp32) == N_OUTPUTS
    assert {(c.graph, c.output) for c in fp32} == {(s.name, n) for s in GRAPH_SPECS.values() for n in s.output_names}
    for c in fp32:
        assert c.status == "PASS", c.line()
        assert c.norm_max <= FP32_TOL.norm_max and c.rel_l2 <= FP32_TOL.rel_l2


def test_fp16_check_passes_or_is_skipped_with_a_reason(exported: ExportReport) -> None:
    fp16 = [c for c in exported.comparisons if c.precision == "fp16"]
    assert len(fp16) == N_OUTPUTS
    for c in fp16:
        assert c.status in ("PASS", "SKIPPED"), c.line()
        if c.status == "SKIPPED":
            assert c.reason, c.line()
        else:
            assert c.norm_max <= FP16_TOL.norm_max and c.rel_l2 <= FP16_TOL.rel_l2


def test_metric_is_the_kits() -> None:
    ref = np.array([1.0, -2.0, 4.0])
    c = compare_output("g", "y", "fp32", ref + np.array([0.0, 4e-4, 0.0]), ref, FP32_TOL)
    assert c.max_abs == pytest.approx(4e-4) and c.norm_max == pytest.approx(1e-4)
    assert c.rel_l2 == pytest.approx(4e-4 / np.sqrt(21)) and c.status == "FAIL"   # rel_l2 8.7e-5 > 5e-5
    assert compare_output("g", "y", "fp32", ref * (1 + 1e-6), ref, FP32_TOL).status == "PASS"
    assert compare_output("g", "y", "fp32", np.full(3, np.nan), ref, FP32_TOL).status == "FAIL"


# --------------------------------------------------------------------------- fp16 graphs
@pytest.mark.parametrize("name", list(GRAPH_SPECS))
def test_fp16_graph_keeps_sensitive_parts_in_fp32(exported: ExportReport, name: str) -> None:
    model = onnx.load(str(exported.out_dir / GRAPH_SPECS[name].file("fp16")))
    types = _types(model)
    nodes = list(model.graph.node)
    # the bulk is fp16: every conv / matmul / gemm runs on fp16 weights
    heavy = [n for n in nodes if n.op_type in ("Conv", "MatMul", "Gemm")]
    assert heavy and all(types[n.input[1]] == FLOAT16 for n in heavy)
    for n in nodes:
        float_io = [x for x in [*n.input, *n.output] if x and types.get(x) in (FLOAT, FLOAT16)]
        if n.op_type == "GridSample":
            assert types[n.input[0]] == FLOAT and types[n.input[1]] == FLOAT, "grid-sample inputs"
        if n.op_type in ("GridSample", "Softmax", "BatchNormalization", "InstanceNormalization",
                         "LayerNormalization", "ReduceMean", "ReduceL2"):
            assert all(types[x] == FLOAT for x in float_io), f"{n.op_type} {n.name} not fp32"
    if name == "motion_extractor":
        # the hand-written channels-first LayerNorm: centred values, variance, sqrt, all fp32
        for op in ("Sub", "Pow", "Sqrt"):
            found = [n for n in nodes if n.op_type == op]
            assert len(found) == 4 and all(types[n.output[0]] == FLOAT for n in found), op
    if name == "warping_spade":
        # the motion blend that makes the sampling grid: softmax weights x keypoint motions, summed
        def float_inputs(node: onnx.NodeProto) -> list[str]:
            return [x for x in node.input if types.get(x) in (FLOAT, FLOAT16)]

        grid = next(n for n in nodes if n.op_type == "GridSample" and n.input[0] == "feature_3d").input[1]
        blend_sum = next(n for n in nodes if grid in n.output)
        blend_mul = next(n for n in nodes if float_inputs(blend_sum)[0] in n.output)
        assert (blend_sum.op_type, blend_mul.op_type) == ("ReduceSum", "Mul")
        assert all(types[x] == FLOAT for x in float_inputs(blend_sum) + float_inputs(blend_mul))


# --------------------------------------------------------------------------- manifest and CLI
def test_manifest_lists_files_hashes_versions_and_weights(exported: ExportReport, synthetic_weights_dir: Path) -> None:
    manifest = json.loads((exported.out_dir / MANIFEST).read_text())
    assert manifest["opset"] >= 20
    assert manifest["versions"]["torch"] == torch.__version__
    assert manifest["versions"]["onnx"] == onnx.__version__
    assert manifest["weights"]["sha256"] == weights_fingerprint(synthetic_weights_dir)
    files = {g["file"]: g for g in manifest["graphs"]}
    assert set(files) == {s.file(p) for s in GRAPH_SPECS.values() for p in ("fp32", "fp16")}
    for name, entry in files.items():
        assert entry["sha256"] == file_sha256(exported.out_dir / name)
        assert entry["verification"] and all(v["status"] in ("PASS", "SKIPPED") for v in entry["verification"].values())


def test_bad_weights_dir_exits_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "weights" / "liveportrait").mkdir(parents=True)
    r = run_export("onnx", "--weights", str(tmp_path / "weights"), "--out", str(tmp_path / "out"))
    assert r.returncode == 2
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and "motion_extractor.pth" in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_help_lists_subcommands() -> None:
    r = run_export("--help")
    assert r.returncode == 0
    assert "onnx" in r.stdout
    has_trt = (REPO_ROOT / "export" / "tensorrt_build.py").is_file()
    assert ("tensorrt" in r.stdout) == has_trt
    onnx_help = run_export("onnx", "--help")
    assert onnx_help.returncode == 0 and "--no-fp16" in onnx_help.stdout and "--weights" in onnx_help.stdout


# --------------------------------------------------------------------------- backend
def _assert_close(out: torch.Tensor, ref: torch.Tensor | np.ndarray, what: str) -> None:
    c = compare_output("backend", what, "fp32", out.numpy(), np.asarray(ref), FP32_TOL)
    assert c.status == "PASS", c.line()


def test_backend_matches_torch_backend(exported: ExportReport, synthetic_weights_dir: Path) -> None:
    ort_backend = OnnxRuntimeBackend(exported.out_dir, device="cpu")
    torch_backend = TorchBackend(load_networks(synthetic_weights_dir), "cpu")
    assert ort_backend.name == "onnxruntime-cpu" and ort_backend.device == torch.device("cpu")
    image = exported.inputs["motion_extractor"]["image"]

    _assert_close(ort_backend.appearance(image), torch_backend.appearance(image), "appearance")
    got, want = ort_backend.motion(image), torch_backend.motion(image)
    assert isinstance(got, motion.KeypointInfo)
    for field in ("pitch", "yaw", "roll", "t", "exp", "scale", "kp"):
        assert getattr(got, field).shape == getattr(want, field).shape
        _assert_close(getattr(got, field), getattr(want, field), field)
    for mlp in ("stitching", "lip", "eye"):
        x = exported.inputs[mlp]["x"]
        x2 = torch.cat([x, x * 0.9])                       # a batch of 2 runs row by row
        _assert_close(getattr(ort_backend, mlp)(x2), getattr(torch_backend, mlp)(x2), mlp)

    # W+G: against the exporter's PyTorch reference on the same inputs (the same W-then-G calls as
    # TorchBackend.render), which saves one more PyTorch run of the slowest graph
    wg = exported.inputs["warping_spade"]
    image_512 = ort_backend.render(wg["feature_3d"], wg["kp_source"], wg["kp_driving"])
    assert image_512.shape == (1, 3, 512, 512) and image_512.dtype == torch.float32
    _assert_close(image_512, exported.references["warping_spade"]["image"], "render")


def _linked_dir(src: Path, dst: Path, skip: str = "", replace: dict[str, str] | None = None) -> Path:
    dst.mkdir()
    for spec in GRAPH_SPECS.values():
        name = spec.file("fp32")
        if name != skip:
            (dst / name).symlink_to(src / (replace or {}).get(name, name))
    return dst


def test_backend_errors_name_the_file(exported: ExportReport, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        OnnxRuntimeBackend(tmp_path / "nowhere", device="cpu")
    missing = _linked_dir(exported.out_dir, tmp_path / "missing", skip="lip.onnx")
    with pytest.raises(FileNotFoundError, match="lip.onnx"):
        OnnxRuntimeBackend(missing, device="cpu")
    swapped = _linked_dir(exported.out_dir, tmp_path / "swapped", replace={"eye.onnx": "lip.onnx"})
    with pytest.raises(OnnxModelError, match=r"eye\.onnx.*inputs"):
        OnnxRuntimeBackend(swapped, device="cpu")
    with pytest.raises(ValueError, match="fp16"):
        OnnxRuntimeBackend(exported.out_dir, device="cpu", precision="fp16")


def test_backend_rejects_a_mixed_export(exported: ExportReport, tmp_path: Path) -> None:
    mixed = _linked_dir(exported.out_dir, tmp_path / "mixed", replace={"eye.onnx": "eye.fp16.onnx"})
    (mixed / MANIFEST).symlink_to(exported.out_dir / MANIFEST)
    with pytest.raises(OnnxModelError, match=r"eye\.onnx.*manifest"):
        OnnxRuntimeBackend(mixed, device="cpu")


def test_provider_choice() -> None:
    from engines.backend_onnx import CPU_PROVIDER, CUDA_PROVIDER, choose_providers

    with_cuda, cpu_only = [CUDA_PROVIDER, CPU_PROVIDER], [CPU_PROVIDER]
    assert choose_providers("auto", with_cuda) == [CUDA_PROVIDER, CPU_PROVIDER]
    assert choose_providers("auto", cpu_only) == [CPU_PROVIDER]
    assert choose_providers("cpu", with_cuda) == [CPU_PROVIDER]
    with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
        choose_providers("cuda", cpu_only)
    with pytest.raises(ValueError, match="device"):
        choose_providers("gpu", with_cuda)


# --------------------------------------------------------------------------- weight sets
@pytest.fixture(scope="module")
def animal_export(synthetic_animal_weights_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m export onnx --weight-set animal`` (fp32 only) into a fresh OUT; returns OUT."""
    from export.onnx_export import main_onnx

    out = tmp_path_factory.mktemp("onnx_sets")
    assert main_onnx(["--weights", str(synthetic_animal_weights_dir), "--out", str(out), "--weight-set", "animal",
                      "--no-fp16", "--log-level", "WARNING"]) == 0
    return out


def test_animal_export_lands_in_its_own_folder_with_its_fingerprint(animal_export: Path,
                                                                    synthetic_animal_weights_dir: Path) -> None:
    from engines.weights import LIVEPORTRAIT_ANIMALS

    assert [p.name for p in animal_export.iterdir()] == ["animal"]          # the human folder stays untouched
    manifest = json.loads((animal_export / "animal" / MANIFEST).read_text())
    assert manifest["weights"]["set"] == "animal"
    assert manifest["weights"]["sha256"] == weights_fingerprint(synthetic_animal_weights_dir, "animal")
    assert manifest["weights"]["files"] == list(LIVEPORTRAIT_ANIMALS.files.values())
    assert {g["file"] for g in manifest["graphs"]} == {s.file("fp32") for s in GRAPH_SPECS.values()}
    assert all(v["status"] == "PASS" for g in manifest["graphs"] for v in g["verification"].values())


def test_onnxruntime_backend_of_the_animal_set_finds_its_graphs(animal_export: Path, synthetic_animal_weights_dir: Path,
                                                                synthetic_weights_dir: Path) -> None:
    from engines.registry import make_backend

    backend = make_backend("onnxruntime", weights=synthetic_animal_weights_dir, device="cpu", download=False,
                           onnx_dir=animal_export, weight_set="animal")
    try:
        assert isinstance(backend, OnnxRuntimeBackend) and backend.model_dir == animal_export / "animal"
        info = backend.motion(torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0)))
        assert info.kp.shape == (1, 21, 3) and torch.isfinite(info.kp).all()
    finally:
        backend.close()
    # the human set given the same folder finds no graphs of its own there
    with pytest.raises(ValueError, match=r"no ONNX graphs verified for the LivePortrait weights"):
        make_backend("onnxruntime", weights=synthetic_weights_dir, device="cpu", download=False,
                      onnx_dir=animal_export)
