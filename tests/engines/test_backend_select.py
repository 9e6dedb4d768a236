"""--backend auto: the decision on every kind of machine, and on this one."""
from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch

from engines.select import BackendChoice, MachineFacts, choose_backend, machine_facts

CPU_ONLY = MachineFacts(cuda=False, tensorrt=True, engines_built=True, onnxruntime_cuda=False)
GPU_TRT = MachineFacts(cuda=True, tensorrt=True, engines_built=True, onnxruntime_cuda=True)
GPU_NO_ENGINES = MachineFacts(cuda=True, tensorrt=True, engines_built=False, onnxruntime_cuda=True)
GPU_NO_TRT = MachineFacts(cuda=True, tensorrt=False, engines_built=False, onnxruntime_cuda=False)


def test_auto_on_cpu_is_torch_or_verified_onnxruntime_and_says_why() -> None:
    c = choose_backend("auto", "auto", CPU_ONLY)
    assert (c.kind, c.device, c.precision) == ("torch", "cpu", "fp32") and "no CUDA GPU" in c.reason
    assert "python -m export onnx" in c.reason
    c = choose_backend("auto", "auto", replace(CPU_ONLY, onnx_verified=True))
    assert (c.kind, c.device) == ("onnxruntime", "cpu") and "passed the check" in c.reason


@pytest.mark.integration
def test_onnx_graphs_count_only_when_verified_for_these_weights(exported_onnx, synthetic_weights_dir,
                                                                tmp_path) -> None:
    import json

    from engines.select import onnx_graphs_verified

    out = exported_onnx.out_dir
    assert onnx_graphs_verified(out, synthetic_weights_dir)
    assert not onnx_graphs_verified(out, None)
    assert not onnx_graphs_verified(tmp_path, synthetic_weights_dir)          # no manifest
    broken = tmp_path / "g"
    broken.mkdir()
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["weights"]["sha256"] = "0" * 64                                  # other weights
    (broken / "manifest.json").write_text(json.dumps(manifest))
    assert not onnx_graphs_verified(broken, synthetic_weights_dir)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["graphs"][0]["verification"]["feature_3d"]["status"] = "FAIL"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    assert not onnx_graphs_verified(broken, synthetic_weights_dir)



def test_auto_on_gpu_prefers_built_tensorrt_engines_then_torch_fp16() -> None:
    assert choose_backend("auto", "auto", GPU_TRT) == BackendChoice("tensorrt", "cuda", "fp16",
                                                                      choose_backend("auto", "auto", GPU_TRT).reason)
    c = choose_backend("auto", "auto", GPU_NO_ENGINES)
    assert (c.kind, c.precision) == ("torch", "fp16") and "python -m export tensorrt" in c.reason
    c = choose_backend("auto", "auto", GPU_NO_TRT)
    assert c.kind == "torch" and "install tensorrt-rtx" in c.reason
    assert choose_backend("auto", "cpu", GPU_TRT).device == "cpu"       # --device cpu wins


def test_explicit_requests_and_impossible_ones() -> None:
    assert choose_backend("onnxruntime", "auto", GPU_TRT).device == "cuda"
    assert choose_backend("onnxruntime", "auto", CPU_ONLY).precision == "fp32"
    with pytest.raises(ValueError, match="needs an NVIDIA GPU"):
        choose_backend("tensorrt", "auto", CPU_ONLY)
    with pytest.raises(ValueError, match="neither tensorrt_rtx nor tensorrt"):
        choose_backend("tensorrt", "auto", GPU_NO_TRT)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        choose_backend("torch", "cuda", CPU_ONLY)
    with pytest.raises(ValueError, match="unknown backend"):
        choose_backend("magic", "auto", CPU_ONLY)


def test_reasons_state_no_measurements() -> None:
    """Figures belong in the README: a reason says why, not how many seconds or percent."""
    machines = (CPU_ONLY, replace(CPU_ONLY, onnx_verified=True), GPU_TRT, GPU_NO_ENGINES, GPU_NO_TRT)
    reasons = {choose_backend("auto", device, facts).reason for facts in machines for device in ("auto", "cpu")}
    assert len(reasons) >= 5
    for reason in reasons:
        assert not re.search(r"\d+(\.\d+)? ?(s|ms|%)(\W|$)|measured", reason), reason


def test_this_machine() -> None:
    facts = machine_facts()
    c = choose_backend("auto", "auto", facts)
    if not torch.cuda.is_available():
        assert c.device == "cpu" and c.kind == ("onnxruntime" if facts.onnx_verified else "torch")
