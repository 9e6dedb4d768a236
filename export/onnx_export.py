"""``python -m export onnx``: the LivePortrait networks as ONNX graphs, verified against PyTorch.

    python -m export onnx --weights DIR --out DIR [--weight-set human|animal] [--no-fp16] [--image PNG]

Loads the official checkpoints of the weight set (``engines.checkpoints.load_networks``; default
the human one) and writes to OUT (for another set, to OUT/<set>, e.g. OUT/animal: the folder the
app and ``make_backend`` look in when given the same OUT as ``--onnx-dir``), opset 20,
batch 1, static shapes, the six graphs of ``engines.graphs.GRAPH_SPECS`` (F, M, W+G fused, S,
R_lip, R_eyes), each also as ``<name>.fp16.onnx``, plus ``manifest.json`` (files, sha256, opset,
versions, weight set and its fingerprint, verification figures).

Exporter: ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript). The legacy TorchScript
exporter works too, but its W+G graph is full of Shape/Gather/Concat/Where chains around every
nearest resize and is slower to export (figures in the README); the dynamo graph is clean:
5-D ``grid_sample`` is the standard ONNX ``GridSample``, BatchNorms after convolutions are folded
into them. We then fold constants once more with larger size limits than the exporter's default,
so the spectral-norm division of G's weights (``weight_orig / sigma``) is baked into plain weights.

Verification (``engines/verification.py``, the path that also checks TensorRT engines): every graph
is run with ONNX Runtime on the CPU on ``reference_inputs`` of a 256x256 crop of our default avatar
and compared with its PyTorch modules per output with the parity kit's metric, at the kit's fp32
profile (1e-4, 5e-5) and, for the fp16 graphs against PyTorch fp32, its fp16 profile (3e-2, 2e-2).

fp16 graphs are converted from the fp32 ONNX graphs (exporting in half on the CPU fails: avg_pool3d
has no CPU half kernel) by ``convert_to_fp16``, our own converter (onnxconverter-common's rounds the
graph inputs to fp16 before its fp32 islands and clamps weights at 1e4). Kept in fp32: grid-sample
inputs and everything computing the sampling grid (keypoint inputs, softmax, the motion blend),
softmax, normalisation ops and statistics (BatchNorm/InstanceNorm/LayerNorm, ConvNeXt's hand-written
channels-first LayerNorm, GRN's norms), and the graph inputs and outputs (casts inside).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from engines.backend_onnx import CPU_PROVIDER, MANIFEST, make_session
from engines.checkpoints import CheckpointError, load_networks
from engines.graphs import GRAPH_SPECS, GraphSpec, graph_modules, run_module
from engines.ops.grid_sample3d import onnx_translation_table
from engines.options import add_engine_arguments
from engines.select import weight_set_dir
from engines.verification import (
    FAIL,
    PROFILES,
    SKIPPED,
    GraphCheck,
    OutputCheck,
    Tolerance,
    compare_graph,
    failed_graph,
    reference_inputs,
)
from engines.weights import (
    LIVEPORTRAIT,
    WeightSet,
    as_weight_set,
    file_sha256,
    missing_checkpoints,
    weight_set_name,
    weights_fingerprint,
)

from .files import write_atomic

log = logging.getLogger(__name__)

# onnx, onnx_ir, onnxscript and onnxruntime are imported in the functions that use them, so that
# check_packages can name a missing one in one line instead of failing at import.
OPSET = 20
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = REPO_ROOT / "assets" / "avatars" / "astronaut.png"
MANIFEST_FORMAT = 1
# Exit statuses: 2 for a problem the user can fix (as main.py), 1 for a failed verification.
EXIT_USAGE, EXIT_FAILED = 2, 1
# Constant folding limits (elements): large enough for G's biggest spectral-norm weight (1024x1024x3x3).
FOLD_LIMIT = 1 << 24
FP16_MAX = 65504.0


FP32_TOL = PROFILES["fp32"]     # kit profile "fp32"
FP16_TOL = PROFILES["fp16"]     # kit profile "fp16"


class ExportError(RuntimeError):
    """The export cannot start or a graph cannot be written; the message says which and why."""


# --------------------------------------------------------------------------- deterministic inputs
def load_face_crop(path: Path, size: int = 256) -> torch.Tensor:
    """Centre square of an image, area-resized to ``size``: 1 x 3 x size x size RGB in [0, 1]."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ExportError(f"{path}: cannot read the verification image")
    h, w = bgr.shape[:2]
    s = min(h, w)
    square = bgr[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    rgb = cv2.cvtColor(cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().div(255.0)[None]


# --------------------------------------------------------------------------- export
@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter warns about optional torchvision ops and deprecations on every call, and its
    optimizer logs every pass at INFO; none of it concerns the user."""
    noisy = [logging.getLogger(n) for n in ("torch.onnx._internal.exporter._registration", "onnx_ir", "onnxscript")]
    levels = [n.level for n in noisy]
    for n in noisy:
        n.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, level in zip(noisy, levels, strict=False):
            n.setLevel(level)


def _custom_translations() -> dict[Callable, Callable]:
    """Translations for our custom ops: W's warp may run as ``avatarcam::grid_sample_3d`` (when that
    switch is on), which is exactly ONNX GridSample."""
    return onnx_translation_table()


def export_graph(module: nn.Module, spec: GraphSpec, inputs: Mapping[str, torch.Tensor], path: Path) -> None:
    """torch.onnx dynamo export at ``OPSET`` with the spec's names, constant folding, checks, save."""
    import onnx
    import onnx_ir
    import onnxscript.optimizer

    args = tuple(inputs[n] for n in spec.input_names)
    with _quiet_exporter():
        program = torch.onnx.export(module, args, None, input_names=spec.input_names,
                                    output_names=spec.output_names, opset_version=OPSET, dynamo=True,
                                    optimize=True, verbose=False, external_data=False,
                                    custom_translation_table=_custom_translations())
        ir_model = program.model
        onnxscript.optimizer.optimize(ir_model, input_size_limit=FOLD_LIMIT, output_size_limit=FOLD_LIMIT)
    model = onnx_ir.serde.serialize_model(ir_model)
    model.producer_name = "avatarcam export.onnx_export"
    onnx.checker.check_model(model)
    _check_static_io(model, spec, path)
    write_atomic(path, model.SerializeToString())


def _value_shapes(values: Iterable[Any]) -> list[tuple[str, tuple[int, ...], int]]:
    return [(v.name, tuple(d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim),
             v.type.tensor_type.elem_type) for v in values]


def _check_static_io(model: Any, spec: GraphSpec, path: Path) -> None:
    import onnx

    f32 = onnx.TensorProto.FLOAT
    for kind, values, expected in (("inputs", model.graph.input, spec.inputs),
                                   ("outputs", model.graph.output, spec.outputs)):
        got = _value_shapes(values)
        want = [(n, tuple(s), f32) for n, s in expected]
        if got != want:
            raise ExportError(f"{path}: exported {kind} {got} differ from the spec {want}")


# --------------------------------------------------------------------------- fp16 conversion
HEAVY_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})
# Run in fp32 wherever they occur: sampling, softmax, normalisation and its statistics.
FP32_OPS = frozenset({"GridSample", "Softmax", "LogSoftmax", "BatchNormalization", "InstanceNormalization",
                      "LayerNormalization", "GroupNormalization", "ReduceL2", "ReduceSumSquare", "ReduceMean"})
# Their outputs are statistics or coordinates: elementwise math on them alone stays fp32 too.
FP32_SEED_OPS = frozenset({"Softmax", "ReduceL2", "ReduceSumSquare", "ReduceMean"})
# Modules run wholly in fp32 (matched on the exporter's class-hierarchy metadata): ConvNeXt's
# hand-written channels-first LayerNorm (mean, centred values, variance, normalisation).
FP32_MODULE_CLASSES = ("LayerNorm2d",)
# Inputs that the op specification requires in float32 whatever the data type (Resize roi, scales).
FLOAT32_ONLY_INPUTS = {"Resize": frozenset({1, 2})}
# Graph inputs that are coordinates: they and the arithmetic on them alone stay fp32.
FP32_GRAPH_INPUTS = frozenset({"kp_source", "kp_driving"})


@dataclass
class Fp16Plan:
    """Which nodes of a graph stay fp32 (by index) and why (for the log)."""

    fp32_nodes: set[int] = field(default_factory=set)
    reasons: dict[str, int] = field(default_factory=dict)

    def keep(self, index: int, reason: str) -> None:
        if index not in self.fp32_nodes:
            self.fp32_nodes.add(index)
            self.reasons[reason] = self.reasons.get(reason, 0) + 1


def _class_hierarchy(node: Any) -> str:
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.class_hierarchy":
            return p.value
    return ""


def plan_fp16(model: Any, types: Mapping[str, int], fp32_inputs: Iterable[str] = FP32_GRAPH_INPUTS) -> Fp16Plan:
    """Decide the fp32 islands of ``model`` (topologically sorted, shape-inferred ``types``)."""
    import onnx

    nodes = list(model.graph.node)
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in nodes if n.op_type == "Constant" for o in n.output}
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    plan = Fp16Plan()
    seeds = {n for n in fp32_inputs if n in {i.name for i in model.graph.input}}

    def dynamic_float_inputs(node: Any) -> list[str]:
        return [x for x in node.input if x and x not in constants and types.get(x) == onnx.TensorProto.FLOAT]

    for i, node in enumerate(nodes):
        if node.op_type in FP32_OPS:
            plan.keep(i, f"op {node.op_type}")
        elif any(c in _class_hierarchy(node) for c in FP32_MODULE_CLASSES):
            plan.keep(i, "custom LayerNorm")
        elif node.op_type not in HEAVY_OPS:
            ins = dynamic_float_inputs(node)
            if ins and all(x in seeds for x in ins):
                plan.keep(i, "keypoint / statistics arithmetic")
        if i in plan.fp32_nodes and (node.op_type in FP32_SEED_OPS or node.op_type not in FP32_OPS):
            seeds.update(node.output)
    # the sampling grid of every GridSample, back to the last heavy op (whose output is cast up)
    stack = [n.input[1] for n in nodes if n.op_type == "GridSample"]
    while stack:
        j = producer.get(stack.pop())
        if j is None or j in plan.fp32_nodes or nodes[j].op_type in HEAVY_OPS:
            continue
        plan.keep(j, "grid-sample grid")
        stack.extend(dynamic_float_inputs(nodes[j]))
    return plan


def _fp16_tensor(t: Any, name: str) -> tuple[Any, int]:
    """An fp16 copy of a float32 TensorProto; returns it and how many values were clipped."""
    from onnx import numpy_helper

    a = numpy_helper.to_array(t)
    clipped = int(np.count_nonzero(np.abs(a) > FP16_MAX))
    return numpy_helper.from_array(np.clip(a, -FP16_MAX, FP16_MAX).astype(np.float16), name), clipped


def convert_to_fp16(model: Any, fp32_inputs: Iterable[str] = FP32_GRAPH_INPUTS) -> tuple[Any, Fp16Plan]:
    """fp16 version of a float32 ONNX model: every float computation in fp16 except the fp32
    islands of ``plan_fp16``; graph inputs and outputs stay float32, with casts inside."""
    import onnx
    from onnx import helper

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.value_info, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    plan = plan_fp16(inferred, types, fp32_inputs)

    inits = {t.name: t for t in g.initializer}
    new_type: dict[str, int] = {v.name: f32 for v in g.input}   # current element type of each float tensor
    new_nodes: list[Any] = []
    fp16_inits: dict[str, Any] = {}
    casts: dict[tuple[str, int], str] = {}
    clipped = 0

    def as_type(name: str, want: int) -> str:
        nonlocal clipped
        if name in inits:
            if want == f32:
                return name
            if name not in fp16_inits:
                fp16_inits[name], n_clip = _fp16_tensor(inits[name], name + "__fp16")
                clipped += n_clip
            return fp16_inits[name].name
        if new_type.get(name, f32) == want:
            return name
        key = (name, want)
        if key not in casts:
            casts[key] = f"{name}__to_{'fp16' if want == f16 else 'fp32'}"
            new_nodes.append(helper.make_node("Cast", [name], [casts[key]], name=casts[key] + "_cast", to=want))
        return casts[key]

    for i, node in enumerate(g.node):
        is_float = any(types.get(x) == f32 for x in [*node.input, *node.output] if x)
        want = f32 if (i in plan.fp32_nodes or not is_float) else f16
        fixed = FLOAT32_ONLY_INPUTS.get(node.op_type, frozenset())
        for k, x in enumerate(node.input):
            if x and types.get(x) == f32 and k not in fixed:
                node.input[k] = as_type(x, want)
        if want == f16:
            _attributes_to_fp16(node)
        for o in node.output:
            if types.get(o) == f32:
                new_type[o] = want
        new_nodes.append(node)

    # graph outputs stay float32: rename an fp16 producer's output and cast it back
    out_names = {o.name for o in g.output}
    out_casts = []
    for node in new_nodes:
        for k, o in enumerate(node.output):
            if o in out_names and new_type.get(o) == f16:
                node.output[k] = o + "__fp16"
                out_casts.append(helper.make_node("Cast", [node.output[k]], [o], name=o + "__to_fp32_cast", to=f32))
    new_nodes += out_casts

    used = {x for n in new_nodes for x in n.input}
    g.ClearField("node")
    g.node.extend(new_nodes)
    kept = [t for t in g.initializer if t.name in used] + [t for t in fp16_inits.values() if t.name in used]
    g.ClearField("initializer")
    g.initializer.extend(kept)
    g.ClearField("value_info")
    if clipped:
        log.warning("fp16: %d weight values beyond +-%g were clipped", clipped, FP16_MAX)
    onnx.checker.check_model(inferred)
    onnx.shape_inference.infer_shapes(inferred, strict_mode=True, check_type=True)
    return inferred, plan


def _attributes_to_fp16(node: Any) -> None:
    """Float32 constants and cast targets inside an fp16 node become fp16."""
    import onnx
    from onnx import numpy_helper

    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == onnx.TensorProto.FLOAT:
            attr.i = onnx.TensorProto.FLOAT16
        elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == onnx.TensorProto.FLOAT:
            attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name))


# --------------------------------------------------------------------------- verification
def verify_graph(path: Path, spec: GraphSpec, precision: str, inputs: Mapping[str, torch.Tensor],
                 refs: Mapping[str, np.ndarray], tol: Tolerance) -> GraphCheck:
    """Run ``path`` with ONNX Runtime on the CPU and compare each output with ``refs``. An fp16
    graph the CPU provider cannot load or run (missing kernels) is SKIPPED with ORT's reason; for
    an fp32 graph that is a FAIL."""
    import onnxruntime

    feeds = {n: inputs[n].detach().float().numpy() for n in spec.input_names}
    try:
        outs = make_session(onnxruntime, path, [CPU_PROVIDER]).run(spec.output_names, feeds)
    except Exception as e:  # noqa: BLE001 - ORT reports missing kernels as generic runtime errors
        reason = f"ONNX Runtime CPU cannot run it: {str(e).splitlines()[0][:160]}"
        return failed_graph(spec.name, precision, tol, spec.output_names, reason,
                            FAIL if precision == "fp32" else SKIPPED)
    return compare_graph(spec.name, precision, tol, dict(zip(spec.output_names, outs, strict=True)), refs)


# --------------------------------------------------------------------------- the whole export
@dataclass
class GraphRecord:
    spec: GraphSpec
    files: dict[str, Path] = field(default_factory=dict)      # precision -> file
    seconds: dict[str, float] = field(default_factory=dict)   # step -> seconds
    fp16_plan: dict[str, int] = field(default_factory=dict)


@dataclass
class ExportReport:
    out_dir: Path
    graphs: list[GraphRecord]
    checks: list[GraphCheck]                         # per graph file
    manifest: Path
    inputs: dict[str, dict[str, torch.Tensor]]       # the verification inputs, per graph
    references: dict[str, dict[str, np.ndarray]]     # PyTorch fp32 outputs on them

    @property
    def comparisons(self) -> list[OutputCheck]:
        """Every output of every graph file."""
        return [o for c in self.checks for o in c.outputs]

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)


def check_packages() -> None:
    """The exporter's own dependencies, named in one error rather than a traceback."""
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"{', '.join(missing)} not installed: pip install -r requirements.txt")


def check_weights_dir(weights_dir: Path, weight_set: WeightSet | str = LIVEPORTRAIT) -> None:
    if not weights_dir.is_dir():
        raise ExportError(f"weights directory {weights_dir} not found")
    files = as_weight_set(weight_set).files
    missing = missing_checkpoints(weights_dir, weight_set)
    if missing:
        folders: dict[str, list[str]] = {}
        for rel in files.values():
            folders.setdefault(rel.rsplit("/", 1)[0], []).append(rel)
        layout = " and ".join(f"{folder}/*.pth" if len(rels) > 1 else rels[0] for folder, rels in folders.items())
        raise ExportError(f"weights directory {weights_dir} lacks {', '.join(missing)} "
                          f"(expected the official layout: {layout})")


def export_onnx(weights_dir: str | Path, out_dir: str | Path, *, fp16: bool = True,
                image: str | Path = DEFAULT_IMAGE, graphs: Sequence[str] | None = None,
                weight_set: WeightSet | str = LIVEPORTRAIT) -> ExportReport:
    """Export, verify and describe ``weight_set``'s graphs into ``out_dir`` itself (the command line
    adds the set's subfolder); see the module docstring. Raises ``ExportError`` or
    ``CheckpointError`` for unusable weights; verification failures are in the report."""
    weights_dir, out_dir = Path(weights_dir), Path(out_dir)
    weight_set = as_weight_set(weight_set)
    check_packages()
    check_weights_dir(weights_dir, weight_set)
    names = list(graphs or GRAPH_SPECS)
    unknown = set(names) - set(GRAPH_SPECS)
    if unknown:
        raise ExportError(f"unknown graph(s) {', '.join(sorted(unknown))}; expected {', '.join(GRAPH_SPECS)}")
    crop = load_face_crop(Path(image))
    t0 = time.perf_counter()
    fingerprint = weights_fingerprint(weights_dir, weight_set)
    nets = load_networks(weights_dir, weight_set=weight_set)
    log.info("loaded the %s networks from %s in %.1f s", weight_set.title, weights_dir, time.perf_counter() - t0)
    out_dir.mkdir(parents=True, exist_ok=True)
    modules = graph_modules(nets)
    inputs = reference_inputs(nets, crop)
    records, checks, refs_all = [], [], {}
    with logging_redirect_tqdm():        # log lines above the bar, not through it
        for name in tqdm(names, desc="export onnx", unit="graph", disable=None):
            rec, graph_checks, refs = _export_one(name, modules[name], inputs[name], out_dir, fp16)
            records.append(rec)
            checks += graph_checks
            refs_all[name] = refs
    manifest = write_manifest(out_dir, records, checks, weights_dir, fingerprint, weight_set)
    return ExportReport(out_dir, records, checks, manifest, {n: inputs[n] for n in names}, refs_all)


def _timed(rec: GraphRecord, step: str, fn: Callable[[], Any]) -> Any:
    t = time.perf_counter()
    result = fn()
    rec.seconds[step] = round(time.perf_counter() - t, 2)
    log.info("%s: %s %.1f s", rec.spec.name, step, rec.seconds[step])
    return result


def _export_one(name: str, module: nn.Module, inputs: Mapping[str, torch.Tensor], out_dir: Path,
                fp16: bool) -> tuple[GraphRecord, list[GraphCheck], dict[str, np.ndarray]]:
    import onnx

    spec = GRAPH_SPECS[name]
    rec = GraphRecord(spec)
    path = out_dir / spec.file("fp32")
    _timed(rec, "export", lambda: export_graph(module, spec, inputs, path))
    rec.files["fp32"] = path
    refs = _timed(rec, "pytorch reference", lambda: {k: v.float().numpy() for k, v in
                                                       run_module(name, module, inputs).items()})
    checks = [_timed(rec, "check fp32", lambda: verify_graph(path, spec, "fp32", inputs, refs, FP32_TOL))]
    if fp16:
        path16 = out_dir / spec.file("fp16")
        model16, plan = _timed(rec, "fp16 conversion", lambda: convert_to_fp16(onnx.load(str(path))))
        write_atomic(path16, model16.SerializeToString())
        rec.files["fp16"] = path16
        rec.fp16_plan = dict(plan.reasons)
        checks.append(_timed(rec, "check fp16", lambda: verify_graph(path16, spec, "fp16", inputs, refs, FP16_TOL)))
    else:
        # a stale fp16 graph from an earlier export would no longer match the fp32 one
        (out_dir / spec.file("fp16")).unlink(missing_ok=True)
    return rec, checks, refs


def write_manifest(out_dir: Path, records: Sequence[GraphRecord], checks: Sequence[GraphCheck],
                   weights_dir: Path, fingerprint: str, weight_set: WeightSet = LIVEPORTRAIT) -> Path:
    import onnx
    import onnxruntime

    graphs = []
    for rec in records:
        for precision, path in rec.files.items():
            verification = {c.output: {k: v for k, v in asdict(c).items() if k not in ("graph", "output", "precision")}
                            for g in checks if g.graph == rec.spec.name and g.precision == precision
                            for c in g.outputs}
            graphs.append({
                "name": rec.spec.name, "file": path.name, "precision": precision,
                "sha256": file_sha256(path), "bytes": path.stat().st_size,
                "inputs": {n: list(s) for n, s in rec.spec.inputs},
                "outputs": {n: list(s) for n, s in rec.spec.outputs},
                "verification": verification,
                **({"fp32_islands": rec.fp16_plan} if precision == "fp16" else {}),
            })
    manifest = {
        "format": MANIFEST_FORMAT,
        "opset": OPSET,
        "exporter": "torch.onnx.export(dynamo=True) + onnxscript optimizer",
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        "weights": {"dir": str(weights_dir.resolve()), "set": weight_set_name(weight_set), "sha256": fingerprint,
                    "files": list(weight_set.files.values())},
        "tolerances": {"fp32": asdict(FP32_TOL), "fp16": asdict(FP16_TOL)},
        "graphs": graphs,
    }
    path = out_dir / MANIFEST
    graphs += _kept_entries(path, fingerprint, {r.spec.name for r in records})
    write_atomic(path, (json.dumps(manifest, indent=2, default=float) + "\n").encode())
    return path


def _kept_entries(path: Path, fingerprint: str, exported: set[str]) -> list[dict[str, Any]]:
    """Entries of an existing manifest for graphs not exported this time (``--graphs``), kept
    when they come from the same weights and opset and their files are unchanged."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if old.get("weights", {}).get("sha256") != fingerprint or old.get("opset") != OPSET:
        return []
    kept = []
    for entry in old.get("graphs", []):
        f = path.parent / str(entry.get("file", ""))
        if entry.get("name") not in exported and f.is_file() and f.stat().st_size == entry.get("bytes"):
            kept.append(entry)
    return kept


# --------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m export onnx",
        description="Export the LivePortrait networks to ONNX (opset 20, batch 1, fp32 and fp16) and "
                    "verify every graph against PyTorch with ONNX Runtime on the CPU.")
    add_engine_arguments(ap, backend=None, device=None, weights=None, weight_set=True, path_type=Path)
    ap.add_argument("--out", required=True, type=Path,
                    help="output directory for the graphs and manifest.json (another weight set's: OUT/<set>)")
    ap.add_argument("--no-fp16", action="store_true", help="skip the fp16 graphs")
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE,
                    help="portrait whose centre crop drives the verification (default: our default avatar)")
    ap.add_argument("--graphs", help=f"comma list of graphs to export (default all: {','.join(GRAPH_SPECS)})")
    ap.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return ap


def main_onnx(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = export_onnx(args.weights, weight_set_dir(args.out, args.weight_set), fp16=not args.no_fp16,
                             image=args.image, graphs=args.graphs.split(",") if args.graphs else None,
                             weight_set=args.weight_set)
    except (ExportError, CheckpointError) as e:
        log.error("%s", e)
        return EXIT_USAGE
    for c in report.comparisons:
        log.info("%s", c.line())
    if any(c.precision == "fp16" and c.status != SKIPPED for c in report.comparisons):
        log.info("fp16 on the CPU provider: ONNX Runtime runs nodes without an fp16 CPU kernel in fp32 "
                 "(it inserts casts), so these figures cover fp16 weights and fp16 tensors between "
                 "kernels, not GPU fp16 arithmetic")
    if not report.ok:
        failed = [c for c in report.comparisons if c.status == FAIL]
        log.error("verification FAILED for %d output(s): %s", len(failed),
                  ", ".join(f"{c.graph}.{c.output} ({c.precision})" for c in failed))
        return EXIT_FAILED
    log.info("wrote %d graph files and %s", sum(len(r.files) for r in report.graphs), report.manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main_onnx())
