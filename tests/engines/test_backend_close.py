"""``InferenceBackend.close()``: a backend releases what it holds, a second close does nothing, and
a call after it fails with ``RuntimeError`` instead of running on released resources. Without a GPU, the
CUDA graphs and a TensorRT engine are checked on stand-ins for what CUDA and TensorRT hold; the
TensorRT backend's wiring in tests/export/test_tensorrt_build.py.)"""
from __future__ import annotations

import threading
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper
from support import needs_cuda

from engines.backend import StubBackend, TorchBackend, _CudaGraph
from engines.backend_onnx import OnnxRuntimeBackend
from engines.graphs import GRAPH_SPECS, GraphSpec
from engines.tensorrt_runtime import TrtEngine


def test_the_stub_closes_idempotently() -> None:
    backend = StubBackend()
    backend.close()
    backend.close()


def write_tiny_graph(spec: GraphSpec, path: Path) -> None:
    """A graph with ``spec``'s inputs and outputs: each output is the mean of the first input,
    broadcast to the output's shape (cheap, and the backend's signature check passes)."""
    first = spec.inputs[0][0]
    nodes = [helper.make_node("ReduceMean", [first], ["mean"], keepdims=0)]      # a scalar
    shapes = []
    for name, shape in spec.outputs:
        shapes.append(helper.make_tensor(f"{name}_shape", TensorProto.INT64, [len(shape)], list(shape)))
        nodes.append(helper.make_node("Expand", ["mean", f"{name}_shape"], [name]))
    graph = helper.make_graph(
        nodes, spec.name,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in spec.inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in spec.outputs],
        initializer=shapes)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_onnxruntime_backend_releases_its_sessions(tmp_path: Path) -> None:
    for spec in GRAPH_SPECS.values():
        write_tiny_graph(spec, tmp_path / spec.file())
    backend = OnnxRuntimeBackend(tmp_path, device="cpu")
    image = torch.rand(1, 3, 256, 256)
    assert backend.appearance(image).shape == (1, 32, 16, 64, 64)
    assert backend.lip(torch.rand(1, 65)).shape == (1, 63)

    backend.close()
    backend.close()
    assert all(graph.session is None for graph in backend._graphs.values())
    with pytest.raises(RuntimeError, match="closed"):
        backend.appearance(image)
    with pytest.raises(RuntimeError, match="closed"):
        backend.lip(torch.rand(1, 65))


class FakeCudaGraph:
    def __init__(self) -> None:
        self.resets = 0

    def replay(self) -> None:
        pass

    def reset(self) -> None:
        self.resets += 1


def captured_graph() -> _CudaGraph:
    """A ``_CudaGraph`` as its capture leaves it, on a stand-in CUDA graph (capturing needs a GPU)."""
    graph = object.__new__(_CudaGraph)
    graph._lock, graph._closed = threading.Lock(), False
    graph.inputs, graph.outputs, graph.graph = [torch.zeros(2)], (torch.ones(2),), FakeCudaGraph()
    return graph


def test_torch_backend_close_frees_each_cuda_graph_once() -> None:
    backend = object.__new__(TorchBackend)          # only the graphs: the networks need not exist
    motion_graph, render_graph = captured_graph(), captured_graph()
    backend._motion_graph, backend._render_graph = motion_graph, render_graph
    assert torch.equal(render_graph(torch.full((2,), 3.0))[0], torch.ones(2))
    backend.close()
    backend.close()
    assert backend._motion_graph is None and backend._render_graph is None
    assert motion_graph.graph.resets == render_graph.graph.resets == 1 and render_graph.outputs == ()
    with pytest.raises(RuntimeError, match="closed"):
        render_graph(torch.zeros(2))


def test_a_tensorrt_engine_closes_once_after_draining_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    drained: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "synchronize", drained.append)
    engine = object.__new__(TrtEngine)               # as loaded, with stand-ins for TensorRT's objects
    engine.name, engine.device, engine._lock, engine._closed = "tiny", torch.device("cuda"), threading.Lock(), False
    engine.engine, engine.context = object(), object()
    engine.inputs, engine.outputs = {"x": torch.zeros(1)}, {"y": torch.zeros(1)}
    engine.close()
    engine.close()
    assert drained == [torch.device("cuda")]
    assert engine.context is None and engine.engine is None and not engine.inputs and not engine.outputs
    with pytest.raises(RuntimeError, match="engine tiny: used after it was closed"):
        engine({"x": torch.zeros(1)})


@needs_cuda()
def test_torch_backend_releases_its_cuda_graphs(synthetic_weights_dir: Path) -> None:
    from engines.checkpoints import load_networks

    backend = TorchBackend(load_networks(synthetic_weights_dir), "cuda", precision="fp16")
    graph = backend._render_graph
    assert graph is not None and backend._motion_graph is not None
    backend.close()
    backend.close()
    assert backend._render_graph is None and backend._motion_graph is None
    with pytest.raises(RuntimeError, match="closed"):
        graph(*graph.inputs)
