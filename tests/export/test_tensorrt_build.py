"""TensorRT engines: ahead-of-time builds without a GPU (TensorRT for RTX), the engine cache,
validation against the PyTorch modules, and the TensorRT backend.

Builds run on the CPU (TensorRT-RTX needs no GPU for them) on small graphs made here with a 5-D
GridSample like the warping network's; the end-to-end run uses the real ONNX export when
``export/onnx_export.py`` exists. Tests that run engines need CUDA and skip without it.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support import needs_cuda
from support.fakes import run_export

from engines import tensorrt_runtime
from engines.backend_tensorrt import TensorRTBackend, TensorRTBackendError, validate_engines
from engines.graphs import GRAPH_SPECS, torch_runner
from engines.verification import (
    PROFILES,
    SKIPPED,
    Tolerance,
    compare_graph,
    compare_output,
    failed_graph,
    reference_inputs,
    stand_in_image,
)
from export import tensorrt_build as tb
from export import trt_compat

CUDA = torch.cuda.is_available()
requires_cuda = needs_cuda("running TensorRT engines needs a CUDA GPU")


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def api() -> trt_compat.TensorRTBuilder:
    """TensorRT for RTX; in CI (where requirements install it) its absence is a failure."""
    try:
        return trt_compat.load(prefer=trt_compat.RTX)
    except trt_compat.TensorRTUnavailable as e:
        if os.environ.get("CI"):
            pytest.fail(f"tensorrt_rtx must be importable in CI: {e}")
        pytest.skip(f"tensorrt_rtx cannot be imported ({e})")


def make_gridsample_graph(path: Path, *, fp16: bool = False, seed: int = 0) -> Path:
    """A small graph shaped like the renderer: Conv3d -> 5-D GridSample -> reshape to 2-D ->
    Conv -> Sigmoid, opset 20, static batch 1, float32 inputs and output. ``fp16`` makes the
    convolutions half precision and keeps GridSample as an fp32 island, like the fp16 export."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    wdt = np.float16 if fp16 else np.float32
    tdt = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    inits = [numpy_helper.from_array((rng.standard_normal((4, 4, 3, 3, 3)) * 0.2).astype(wdt), "w3"),
             numpy_helper.from_array(np.zeros(4, wdt), "b3"),
             numpy_helper.from_array((rng.standard_normal((3, 16, 1, 1)) * 0.2).astype(wdt), "w2"),
             numpy_helper.from_array(np.array([1, 16, 8, 8], np.int64), "shape2d")]
    nodes = []

    def cast(src: str, dst: str, to: int) -> None:
        nodes.append(helper.make_node("Cast", [src], [dst], to=to))

    x = "feature"
    if fp16:
        cast("feature", "feature_h", TensorProto.FLOAT16)
        x = "feature_h"
    nodes.append(helper.make_node("Conv", [x, "w3", "b3"], ["c3"], pads=[1] * 6))
    if fp16:
        cast("c3", "c3_f", TensorProto.FLOAT)          # the fp32 island around GridSample
    nodes.append(helper.make_node("GridSample", ["c3_f" if fp16 else "c3", "grid"], ["warped"],
                                  mode="linear", padding_mode="zeros", align_corners=0))
    nodes.append(helper.make_node("Reshape", ["warped", "shape2d"], ["flat"]))
    if fp16:
        cast("flat", "flat_h", TensorProto.FLOAT16)
    nodes.append(helper.make_node("Conv", ["flat_h" if fp16 else "flat", "w2"], ["c2"]))
    nodes.append(helper.make_node("Sigmoid", ["c2"], ["image_h" if fp16 else "image"]))
    if fp16:
        cast("image_h", "image", TensorProto.FLOAT)
    graph = helper.make_graph(
        nodes, "tiny_warp",
        [helper.make_tensor_value_info("feature", TensorProto.FLOAT, [1, 4, 4, 8, 8]),
         helper.make_tensor_value_info("grid", TensorProto.FLOAT, [1, 4, 8, 8, 3])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    onnx.checker.check_model(model, full_check=True)
    assert tdt in {t.data_type for t in model.graph.initializer}
    onnx.save(model, str(path))
    return path


def tiny_inputs(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"feature": rng.standard_normal((1, 4, 4, 8, 8)).astype(np.float32),
            "grid": rng.uniform(-1, 1, (1, 4, 8, 8, 3)).astype(np.float32)}


def onnxruntime_reference(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def engine_mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in out.glob("*.engine")}


# --------------------------------------------------------------------------- AOT builds (no GPU)
@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16-with-fp32-island"])
def test_aot_build_of_5d_gridsample_needs_no_gpu(api, tmp_path, fp16):
    graph = make_gridsample_graph(tmp_path / "tiny.onnx", fp16=fp16)
    # the graph itself is sound: onnxruntime runs it on the CPU
    assert onnxruntime_reference(graph, tiny_inputs()).shape == (1, 3, 8, 8)
    for target in (api.resolve_target(), api.resolve_target(["8.6", "12.0"])):
        data, io = api.build_engine(graph, target)
        assert len(data) > 10_000, target
        assert io["inputs"] == [{"name": "feature", "dtype": "float32", "shape": [1, 4, 4, 8, 8]},
                                {"name": "grid", "dtype": "float32", "shape": [1, 4, 8, 8, 3]}]
        assert io["outputs"] == [{"name": "image", "dtype": "float32", "shape": [1, 3, 8, 8]}]


def test_build_errors_are_reported_with_tensorrt_reason(api, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(trt_compat.EngineBuildError, match="bad.onnx.*parser"):
        api.build_engine(bad, api.resolve_target())
    # Turing cannot run fp32 3-D convolutions: the builder's own reason reaches the message
    graph = make_gridsample_graph(tmp_path / "tiny.onnx")
    with pytest.raises(trt_compat.EngineBuildError, match="7.5"):
        api.build_engine(graph, api.resolve_target(["7.5"]))


def test_targets_are_parsed_and_checked(api):
    assert trt_compat.parse_compute_capability("8.6") == "8.6"
    assert trt_compat.parse_compute_capability("sm_120") == "12.0"
    assert trt_compat.parse_compute_capability("89") == "8.9"
    with pytest.raises(ValueError, match="MAJOR.MINOR"):
        trt_compat.parse_compute_capability("ampere")
    target = api.resolve_target(["12.0", "8.6", "8.6"])
    assert target.compute_capabilities == ("8.6", "12.0") and target.key == "cc:8.6,12.0"
    assert api.resolve_target().key == "rtx-default"
    with pytest.raises(ValueError, match="cannot target compute capability 5.0"):
        api.resolve_target(["5.0"])


# --------------------------------------------------------------------------- cache
def test_cache_key_covers_flavour_version_target_and_onnx():
    base = dict(flavour="tensorrt-rtx", version="1.7.1.116", target_key="rtx-default", onnx_sha256="ab" * 32)
    key = tb.engine_cache_key(**base)
    assert key == tb.engine_cache_key(**base)
    for change in ({"flavour": "tensorrt"}, {"version": "1.7.2.0"}, {"target_key": "cc:8.6"},
                   {"onnx_sha256": "cd" * 32}, {"weights_sha256": "ef" * 32}):
        assert tb.engine_cache_key(**{**base, **change}) != key, change
    assert tb.engine_cache_key(**base, recipe=tb.BUILD_RECIPE + 1) != key


def test_onnx_fingerprint_follows_the_bytes(tmp_path):
    a = make_gridsample_graph(tmp_path / "a.onnx", seed=0)
    b = make_gridsample_graph(tmp_path / "b.onnx", seed=0)
    c = make_gridsample_graph(tmp_path / "c.onnx", seed=1)       # other weights
    assert tb.onnx_fingerprint(a) == tb.onnx_fingerprint(b) != tb.onnx_fingerprint(c)


def test_onnx_fingerprint_covers_external_weights(tmp_path):
    import onnx

    model = onnx.load(str(make_gridsample_graph(tmp_path / "g.onnx")))
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.onnx.data", size_threshold=0)
    before = tb.onnx_fingerprint(tmp_path / "ext.onnx")
    data = tmp_path / "ext.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[0] ^= 0xFF
    data.write_bytes(bytes(raw))
    assert tb.onnx_fingerprint(tmp_path / "ext.onnx") != before


def test_unchanged_key_skips_and_changes_rebuild(api, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="export")
    onnx_dir, out = tmp_path / "onnx", tmp_path / "engines"
    onnx_dir.mkdir()
    warping = make_gridsample_graph(onnx_dir / "warping_spade.fp16.onnx", fp16=True)
    jobs = [tb.BuildJob("warping_spade", warping, "fp16"),
            tb.BuildJob("motion_extractor", make_gridsample_graph(onnx_dir / "motion_extractor.onnx"), "fp32")]
    target = api.resolve_target()

    first = tb.build_engines(api, jobs, out, target)
    assert [o.built for o in first] == [True, True]
    manifest = json.loads((out / tb.ENGINES_JSON).read_text())["engines"]
    assert set(manifest) == {"warping_spade", "motion_extractor"}
    entry = manifest["warping_spade"]
    assert entry["precision"] == "fp16" and entry["onnx"] == str((onnx_dir / "warping_spade.fp16.onnx").resolve())
    assert entry["flavour"] == "tensorrt-rtx" and entry["version"] == api.version and entry["target"] == "rtx-default"
    assert entry["build_seconds"] >= 0 and entry["size_bytes"] == (out / "warping_spade.engine").stat().st_size
    assert entry["key"] == tb.engine_cache_key(api.flavour, api.version, target.key, entry["onnx_sha256"])
    mtimes = engine_mtimes(out)

    caplog.clear()
    second = tb.build_engines(api, jobs, out, target)
    assert [o.built for o in second] == [False, False]
    assert engine_mtimes(out) == mtimes
    assert "warping_spade: unchanged" in caplog.text and "motion_extractor: unchanged" in caplog.text

    # other ONNX bytes (new weights): only that engine is rebuilt
    make_gridsample_graph(onnx_dir / "motion_extractor.onnx", seed=7)
    third = tb.build_engines(api, jobs, out, target)
    assert [o.built for o in third] == [False, True]

    # a damaged engine file is rebuilt even though its key is unchanged
    (out / "warping_spade.engine").write_bytes(b"truncated")
    assert [o.built for o in tb.build_engines(api, jobs, out, target)] == [True, False]

    # another target: everything is rebuilt
    other = tb.build_engines(api, jobs, out, api.resolve_target(["8.9"]))
    assert [o.built for o in other] == [True, True]
    assert json.loads((out / tb.ENGINES_JSON).read_text())["engines"]["warping_spade"]["target"] == "cc:8.9"


def test_plan_prefers_fp16_except_motion_extractor_and_mlps(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="export")
    assert tb.FP32_GRAPHS == {"motion_extractor", "stitching", "lip", "eye"}
    for name in tb.GRAPHS:
        (tmp_path / f"{name}.onnx").touch()
        if name != "appearance_feature_extractor":
            (tmp_path / f"{name}.fp16.onnx").touch()
    jobs, missing = tb.plan_jobs(tmp_path)
    assert missing == []
    chosen = {j.name: (j.onnx.name, j.precision) for j in jobs}
    assert chosen["warping_spade"] == ("warping_spade.fp16.onnx", "fp16")
    for name in tb.FP32_GRAPHS:
        assert chosen[name] == (f"{name}.onnx", "fp32"), name
    assert chosen["appearance_feature_extractor"] == ("appearance_feature_extractor.onnx", "fp32")
    assert "appearance_feature_extractor: no fp16 graph" in caplog.text
    jobs, _ = tb.plan_jobs(tmp_path, fp32_only=True)
    assert {j.precision for j in jobs} == {"fp32"}
    (tmp_path / "lip.onnx").unlink()
    assert tb.plan_jobs(tmp_path, fp32_only=True)[1] == ["lip.onnx"]


# --------------------------------------------------------------------------- command line
def test_cli_builds_every_graph_of_an_onnx_dir_then_skips(api, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="export")
    onnx_dir, out = tmp_path / "onnx", tmp_path / "out"
    onnx_dir.mkdir()
    for i, name in enumerate(tb.GRAPHS):        # stand-ins for the six graphs
        make_gridsample_graph(onnx_dir / f"{name}.onnx", seed=i)
        make_gridsample_graph(onnx_dir / f"{name}.fp16.onnx", fp16=True, seed=i)
    argv = ["--out", str(out), "--onnx-dir", str(onnx_dir), "--target-cc", "8.6,8.9,12.0"]
    assert tb.main_tensorrt(argv) == 0
    engines = json.loads((out / tb.ENGINES_JSON).read_text())["engines"]
    assert set(engines) == set(tb.GRAPHS)
    assert engines["motion_extractor"]["precision"] == engines["lip"]["precision"] == "fp32"
    assert engines["appearance_feature_extractor"]["precision"] == engines["warping_spade"]["precision"] == "fp16"
    assert {e["target"] for e in engines.values()} == {"cc:8.6,8.9,12.0"}
    assert "6 engine(s) built, 0 unchanged" in caplog.text
    caplog.clear()
    assert tb.main_tensorrt(argv) == 0
    assert "0 engine(s) built, 6 unchanged" in caplog.text


def test_cli_builds_the_animal_set_into_its_own_folder_keyed_by_its_fingerprint(api, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="export")
    onnx_base, out = tmp_path / "onnx", tmp_path / "out"
    onnx_dir = onnx_base / "animal"                 # where `python -m export onnx --weight-set animal` writes
    onnx_dir.mkdir(parents=True)
    for i, name in enumerate(tb.GRAPHS):
        make_gridsample_graph(onnx_dir / f"{name}.onnx", seed=i)

    def manifest(weight_set: str, sha: str) -> None:
        (onnx_dir / "manifest.json").write_text(json.dumps({"weights": {"set": weight_set, "sha256": sha}}))

    manifest("animal", "ab" * 32)
    argv = ["--out", str(out), "--onnx-dir", str(onnx_base), "--weight-set", "animal", "--fp32-only"]
    assert tb.main_tensorrt(argv) == 0
    assert not (out / tb.ENGINES_JSON).exists()     # the human set's folder is left alone
    engines = json.loads((out / "animal" / tb.ENGINES_JSON).read_text())["engines"]
    assert set(engines) == set(tb.GRAPHS)
    for entry in engines.values():
        assert (entry["weight_set"], entry["weights_sha256"]) == ("animal", "ab" * 32)
        assert entry["key"] == tb.engine_cache_key(entry["flavour"], entry["version"], entry["target"],
                                                   entry["onnx_sha256"], weights_sha256="ab" * 32)
    assert tb.main_tensorrt(argv) == 0 and "0 engine(s) built, 6 unchanged" in caplog.text
    caplog.clear()
    manifest("animal", "cd" * 32)                   # other weights recorded: every engine is rebuilt
    assert tb.main_tensorrt(argv) == 0 and "6 engine(s) built, 0 unchanged" in caplog.text
    caplog.clear()
    manifest("human", "cd" * 32)                    # the human set's graphs in the animal folder
    assert tb.main_tensorrt(argv) == tb.EXIT_USAGE
    assert "exported from the human weights, not the animal ones" in caplog.text


def test_cli_errors_are_one_clear_line(api, tmp_path, caplog, monkeypatch):
    out = tmp_path / "out"
    assert tb.main_tensorrt(["--out", str(out), "--target-cc", "9.9"]) == tb.EXIT_USAGE
    assert "cannot target compute capability 9.9" in caplog.text
    caplog.clear()
    assert tb.main_tensorrt(["--out", str(out)]) == tb.EXIT_USAGE          # no graphs, no weights
    assert "pass --weights DIR" in caplog.text
    caplog.clear()
    monkeypatch.setitem(sys.modules, "export.onnx_export", None)             # exporter not importable
    assert tb.main_tensorrt(["--out", str(out), "--weights", str(tmp_path)]) == tb.EXIT_USAGE
    assert "export/onnx_export.py" in caplog.text and "python -m export onnx" in caplog.text


# --------------------------------------------------------------------------- validation (no GPU)
def _reference(engine: str, feeds):
    x = feeds["x"]
    if engine == "motion_extractor":
        return {"pitch": x * 2, "kp": torch.tanh(x)}
    return {"y": torch.sin(x) + 1}


def _inputs():
    g = torch.Generator().manual_seed(0)
    return {"stitching": {"x": torch.randn(1, 126, generator=g)},
            "motion_extractor": {"x": torch.randn(1, 66, generator=g)}}


def test_validation_accepts_a_right_runner_and_rejects_a_wrong_one(caplog):
    def right(engine, feeds):
        return {k: v + 1e-7 * v.abs().max() for k, v in _reference(engine, feeds).items()}

    def wrong(engine, feeds):
        out = dict(_reference(engine, feeds))
        if engine == "motion_extractor":
            out["kp"] = out["kp"] * 1.1                   # 10 % off: far outside any tolerance
        return out

    ok = validate_engines(right, _reference, _inputs(), "fp32")
    assert ok.accepted == ["stitching", "motion_extractor"] and ok.rejected == {}

    caplog.set_level(logging.WARNING, logger="engines")
    bad = validate_engines(wrong, _reference, _inputs(), "fp16")
    assert bad.accepted == ["stitching"]
    assert "kp norm_max" in bad.rejected["motion_extractor"] and "pitch" not in bad.rejected["motion_extractor"]
    assert "motion_extractor: FAIL: differs from PyTorch: kp norm_max" in caplog.text
    assert "will not be used" in caplog.text
    assert "motion_extractor: FAIL" in str(bad) and "stitching: PASS" in str(bad)


def test_validation_profile_is_per_engine():
    def half_precision(engine, feeds):                 # errors of fp16 size (1e-3 relative)
        return {k: v + 1e-3 * v.abs().max() for k, v in _reference(engine, feeds).items()}

    assert validate_engines(half_precision, _reference, _inputs(), "fp16").rejected == {}
    mixed = validate_engines(half_precision, _reference, _inputs(),
                             {"stitching": "fp16", "motion_extractor": "fp32"})
    assert mixed.accepted == ["stitching"] and "tol 0.0001" in mixed.rejected["motion_extractor"]
    assert validate_engines(half_precision, _reference, _inputs(), Tolerance(1e-2, 1e-2)).rejected == {}


@pytest.mark.parametrize("case, reason", [
    ("raises", "engine raised RuntimeError: boom"),
    ("nan", "y not finite"),
    ("missing", "missing outputs y"),
    ("shape", "wrong output shapes y"),
])
def test_validation_reasons(case, reason):
    def runner(engine, feeds):
        ref = _reference(engine, feeds)["y"]
        if case == "raises":
            raise RuntimeError("boom")
        if case == "nan":
            return {"y": torch.full_like(ref, float("nan"))}
        if case == "missing":
            return {"z": ref}
        return {"y": ref[:, :5]}

    report = validate_engines(runner, _reference, {"stitching": _inputs()["stitching"]}, "fp16")
    assert report.accepted == [] and reason in report.rejected["stitching"]


def test_graph_check_status_and_reasons():
    tol = PROFILES["fp32"]
    skipped = failed_graph("g", "fp16", tol, ["a", "b"], "no fp16 kernel", status=SKIPPED)
    assert skipped.status == SKIPPED and not skipped.passed and skipped.reason == "no fp16 kernel"
    assert [(o.output, o.status, o.reason) for o in skipped.outputs] == [("a", SKIPPED, "no fp16 kernel"),
                                                                          ("b", SKIPPED, "no fp16 kernel")]
    ref = {"a": torch.ones(2, 3), "b": torch.arange(6.0).reshape(2, 3)}
    same = compare_graph("g", "fp32", tol, {k: v.clone() for k, v in ref.items()}, ref)
    assert same.passed and same.reason == "" and [o.status for o in same.outputs] == ["PASS", "PASS"]
    off = compare_graph("g", "fp32", tol, {"a": ref["a"], "b": ref["b"] * 1.01}, ref)
    assert off.status == "FAIL" and off.reason.startswith("differs from PyTorch: b norm_max")
    assert [o.status for o in off.outputs] == ["PASS", "FAIL"]
    assert "g: FAIL" in off.line() and "worst b" in off.line()


def test_reference_inputs_fit_every_graph():
    nets = _TinyNets.build()
    image = stand_in_image("cpu")
    assert image.shape == (1, 3, 256, 256) and torch.equal(image, stand_in_image("cpu"))
    inputs = reference_inputs(nets, image)
    assert set(inputs) == set(GRAPH_SPECS)
    for name, spec in GRAPH_SPECS.items():
        assert {k: tuple(v.shape) for k, v in inputs[name].items()} == dict(spec.inputs), name
        assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in inputs[name].values()), name
    wg = inputs["warping_spade"]
    assert not torch.equal(wg["kp_source"], wg["kp_driving"])          # a driving motion, not the source
    runs = torch_runner(nets)
    for name in GRAPH_SPECS:                                            # the PyTorch modules accept them
        assert set(runs(name, inputs[name])) == set(GRAPH_SPECS[name].output_names), name


def test_metric_matches_the_parity_kit():
    ref = torch.tensor([1.0, -2.0, 4.0], dtype=torch.float64)
    out = ref + torch.tensor([0.0, 0.004, 0.0], dtype=torch.float64)
    check = compare_output("g", "y", "fp16", out, ref, PROFILES["fp16"])
    assert check.norm_max == pytest.approx(0.004 / 4) and check.rel_l2 == pytest.approx(0.004 / float(ref.norm()))
    assert check.passed and not compare_output("g", "y", "fp32", out, ref, PROFILES["fp32"]).passed
    zero = compare_output("g", "y", "fp32", torch.full((3,), 1e-5), torch.zeros(3), PROFILES["fp32"])
    assert zero.norm_max == pytest.approx(1e-5)       # all-zero reference: absolute error, as in the kit


# --------------------------------------------------------------------------- backend
@pytest.mark.skipif(CUDA, reason="checks the error raised where there is no CUDA")
def test_backend_without_cuda_is_a_clear_error(tmp_path):
    with pytest.raises(TensorRTBackendError, match="needs an NVIDIA GPU with CUDA.*torch backend"):
        TensorRTBackend(tmp_path)
    with pytest.raises(TensorRTBackendError, match="CUDA device, not cpu"):
        TensorRTBackend(tmp_path, device="cpu")


class _TinyNets:
    """Cheap stand-ins with the real networks' input and output shapes (the MLPs are the real ones)."""

    @staticmethod
    def build():
        from torch import nn

        from engines.checkpoints import LivePortraitNetworks
        from engines.models import build

        class F(nn.Module):
            def forward(self, image):
                return image.mean() * torch.ones(1, 32, 16, 64, 64)

        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(3, 66 * 3 + 3 + 63 + 1 + 63)

            def forward(self, image):
                y = self.fc(image.mean(dim=(2, 3))) * 0.1
                names, sizes = ("pitch", "yaw", "roll", "t", "exp", "scale", "kp"), (66, 66, 66, 3, 63, 1, 63)
                return dict(zip(names, torch.split(y, sizes, dim=1), strict=True))

        class W(nn.Module):
            def forward(self, feature, kp_source, kp_driving):
                return {"out": feature.mean() * torch.ones(1, 256, 64, 64) + (kp_driving - kp_source).sum()}

        class G(nn.Module):
            def forward(self, x):
                return torch.sigmoid(x.mean()) * torch.ones(1, 3, 512, 512)

        return LivePortraitNetworks(appearance=F(), motion=M(), warping=W(), generator=G(),
                                    stitching=build("retarget_shoulder"), lip=build("retarget_mouth"),
                                    eye=build("retarget_eye"))


def _fake_engine_dir(tmp_path: Path, names) -> Path:
    records = {n: {"file": f"{n}.engine", "precision": "fp32" if n in tb.FP32_GRAPHS else "fp16"} for n in names}
    (tmp_path / tb.ENGINES_JSON).write_text(json.dumps({"format": tb.ENGINES_JSON_FORMAT, "engines": records}))
    return tmp_path


def fake_tensorrt(monkeypatch: pytest.MonkeyPatch, engine_class: type) -> None:
    """TensorRTBackend on the CPU: no CUDA check, a TensorRT API stand-in, ``engine_class`` as the engines."""
    import engines.backend_tensorrt as bt

    class FakeApi:
        flavour = "tensorrt-rtx"

        def runtime(self):
            return object()

    monkeypatch.setattr(bt, "_require_cuda", lambda device: torch.device("cpu"))
    monkeypatch.setattr(tensorrt_runtime, "load", lambda prefer=None: FakeApi())
    monkeypatch.setattr(bt, "TrtEngine", engine_class)


def test_backend_wiring_uses_validated_engines_and_falls_back(tmp_path, monkeypatch, caplog):
    """The backend's logic on the CPU with fake engines (no TensorRT runs here): a wrong engine is
    rejected by validation and its PyTorch module used instead; the others serve the calls."""
    nets = _TinyNets.build()
    reference = torch_runner(nets)
    calls: list[str] = []

    class FakeEngine:
        batch = 1

        def __init__(self, api, runtime, path, device):
            self.name = path.stem
            if self.name == "eye":
                raise tensorrt_runtime.EngineLoadError("eye.engine: engine invalid on this machine: unsupported cc")

        def __call__(self, feeds):
            calls.append(self.name)
            out = dict(reference(self.name, feeds))
            if self.name == "lip":
                out["y"] = out["y"] + 1.0                 # deliberately wrong
            return out

    fake_tensorrt(monkeypatch, FakeEngine)
    caplog.set_level(logging.INFO, logger="engines")
    engine_dir = _fake_engine_dir(tmp_path, tb.GRAPHS)

    backend = TensorRTBackend(engine_dir, fallback=nets)
    assert set(backend.engines) == {"appearance_feature_extractor", "motion_extractor", "warping_spade", "stitching"}
    assert backend.report.rejected.keys() == {"lip"} and "differs from PyTorch" in backend.problems["lip"]
    assert "unsupported cc" in backend.problems["eye"]
    assert backend.name == "tensorrt-rtx+torch(lip,eye)"
    assert "lip: FAIL" in caplog.text and "engine eye not used" in caplog.text

    calls.clear()
    image = torch.rand(2, 3, 256, 256)                  # batch 2 through batch-1 engines
    assert backend.appearance(image).shape == (2, 32, 16, 64, 64)
    info = backend.motion(image)
    assert info.kp.shape == (2, 21, 3) and info.pitch.shape == (2, 1)
    x = torch.randn(1, 21, 3)
    assert backend.render(torch.ones(1, 32, 16, 64, 64), x, x).shape == (1, 3, 512, 512)
    assert backend.stitching(torch.randn(1, 126)).shape == (1, 65)
    lip_in = torch.randn(1, 65)
    assert torch.equal(backend.lip(lip_in), nets.lip(lip_in).detach())      # the PyTorch module, not the engine
    assert calls == ["appearance_feature_extractor"] * 2 + ["motion_extractor"] * 2 + ["warping_spade", "stitching"]


def test_backend_without_fallback_needs_every_engine(tmp_path, monkeypatch):

    class FakeEngine:
        batch = 1

        def __init__(self, api, runtime, path, device):
            self.name = path.stem

    fake_tensorrt(monkeypatch, FakeEngine)
    with pytest.raises(TensorRTBackendError, match="warping_spade: not built"):
        TensorRTBackend(_fake_engine_dir(tmp_path, [g for g in tb.GRAPHS if g != "warping_spade"]))
    with pytest.raises(TensorRTBackendError, match="no engines in"):
        TensorRTBackend(tmp_path / "empty")
    assert TensorRTBackend(_fake_engine_dir(tmp_path, tb.GRAPHS)).name == "tensorrt-rtx"


def test_backend_close_releases_every_engine_once(tmp_path, monkeypatch):
    closed: list[str] = []

    class FakeEngine:
        batch = 1

        def __init__(self, api, runtime, path, device):
            self.name = path.stem

        def __call__(self, feeds):
            return {"y": torch.zeros(1, 65)}

        def close(self):
            closed.append(self.name)

    fake_tensorrt(monkeypatch, FakeEngine)
    backend = TensorRTBackend(_fake_engine_dir(tmp_path, tb.GRAPHS))
    assert backend.stitching(torch.zeros(1, 126)).shape == (1, 65)
    backend.close()
    backend.close()
    assert sorted(closed) == sorted(tb.GRAPHS) and backend.engines == {}
    with pytest.raises(RuntimeError, match="closed: stitching"):
        backend.stitching(torch.zeros(1, 126))
    with pytest.raises(RuntimeError, match="closed: warping_spade"):
        backend.render(torch.zeros(1, 32, 16, 64, 64), torch.zeros(1, 21, 3), torch.zeros(1, 21, 3))


@requires_cuda
def test_engine_runs_like_onnxruntime_on_the_gpu(api, tmp_path):
    from engines.tensorrt_runtime import EngineLoadError, TrtEngine

    graph = make_gridsample_graph(tmp_path / "tiny.onnx")
    data, _ = api.build_engine(graph, api.resolve_target())
    (tmp_path / "tiny.engine").write_bytes(data)
    runtime = api.runtime()
    try:
        engine = TrtEngine(api, runtime, tmp_path / "tiny.engine", torch.device("cuda"))
    except EngineLoadError as e:
        pytest.skip(f"this GPU cannot run TensorRT-RTX engines: {e}")
    feeds = tiny_inputs()
    outs = engine({k: torch.from_numpy(v).cuda() for k, v in feeds.items()})
    ref = torch.from_numpy(onnxruntime_reference(graph, feeds))
    assert compare_output("tiny", "image", "fp32", outs["image"], ref, PROFILES["fp32"]).passed
    # a batch of two runs sample by sample through the batch-1 engine
    from engines.tensorrt_runtime import run_batched
    two = run_batched(engine, {k: torch.from_numpy(np.concatenate([v, v])).cuda() for k, v in feeds.items()})
    assert two["image"].shape == (2, 3, 8, 8) and torch.equal(two["image"][0], two["image"][1])
    engine.close()
    engine.close()
    assert engine.context is None and engine.engine is None and not engine.inputs and not engine.outputs
    with pytest.raises(RuntimeError, match="closed"):
        engine({k: torch.from_numpy(v).cuda() for k, v in feeds.items()})


# --------------------------------------------------------------------------- end to end
def _onnx_exporter_present() -> bool:
    """``python -m export`` and the ONNX exporter it calls exist (another part of the project)."""
    return all(importlib.util.find_spec(m) is not None for m in ("export.onnx_export", "export.__main__"))


@pytest.fixture(scope="module")
def built_engines(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    """``python -m export tensorrt`` on the kit's synthetic weights: ONNX export, then every engine.
    Returns the output folder, the command's log and the weights folder."""
    if not _onnx_exporter_present():
        pytest.skip("export/onnx_export.py or export/__main__.py does not exist yet (`python -m export`)")
    weights = request.getfixturevalue("synthetic_weights_dir")      # only now: writing it takes a while
    onnx_dir = request.getfixturevalue("exported_onnx").out_dir     # the graphs the ONNX tests verified
    out = tmp_path_factory.mktemp("trt_engines")
    proc = run_export("tensorrt", "--weights", str(weights), "--out", str(out), "--onnx-dir", str(onnx_dir),
                      timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout + proc.stderr, weights


@pytest.mark.integration
def test_end_to_end_builds_all_engines_from_weights(built_engines, exported_onnx):
    out, text, weights = built_engines
    engines = json.loads((out / tb.ENGINES_JSON).read_text())["engines"]
    assert set(engines) == set(tb.GRAPHS)
    for name, entry in engines.items():
        assert (out / entry["file"]).stat().st_size == entry["size_bytes"] > 0, name
        assert entry["precision"] == ("fp32" if name in tb.FP32_GRAPHS else "fp16"), name
        assert entry["target"] == "rtx-default"
    assert {t["name"] for t in engines["motion_extractor"]["io"]["outputs"]} == {
        "pitch", "yaw", "roll", "t", "exp", "scale", "kp"}
    assert engines["warping_spade"]["io"]["outputs"] == [
        {"name": "image", "dtype": "float32", "shape": [1, 3, 512, 512]}]
    assert "6 engine(s) built" in text
    again = run_export("tensorrt", "--weights", str(weights), "--out", str(out), "--onnx-dir",
                       str(exported_onnx.out_dir))
    assert again.returncode == 0 and "0 engine(s) built, 6 unchanged" in again.stdout + again.stderr


@requires_cuda
def test_backend_validates_engines_against_pytorch_on_the_gpu(built_engines):
    from engines.checkpoints import load_networks

    out, _, weights = built_engines
    nets = load_networks(weights)
    backend = TensorRTBackend(out, fallback=nets)
    assert backend.report is not None
    if not backend.engines:
        pytest.skip(f"no engine can run on this GPU: {backend.problems}")
    assert backend.report.rejected == {}, str(backend.report)
    image = torch.rand(1, 3, 256, 256, device="cuda")
    feature = backend.appearance(image)
    info = backend.motion(image)
    from engines import motion
    x_s = motion.keypoints_from_info(info)
    assert feature.shape == (1, 32, 16, 64, 64) and info.kp.shape == (1, 21, 3)
    assert backend.render(feature, x_s, x_s).shape == (1, 3, 512, 512)
    assert backend.stitching(torch.cat([x_s.reshape(1, -1)] * 2, dim=1)).shape == (1, 65)


def test_both_exporters_take_the_weight_set_by_name():
    from export.onnx_export import build_parser as onnx_parser

    for parser, argv in ((tb._parser(), ["--out", "o"]), (onnx_parser(), ["--weights", "w", "--out", "o"])):
        assert parser.parse_args(argv).weight_set == "human"
        assert parser.parse_args([*argv, "--weight-set", "animal"]).weight_set == "animal"
        with pytest.raises(SystemExit):
            parser.parse_args([*argv, "--weight-set", "cat"])
