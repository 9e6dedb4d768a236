"""``python -m export tensorrt``: TensorRT engines from the ONNX graphs of ``python -m export onnx``.

    python -m export tensorrt --weights DIR --out DIR [--onnx-dir DIR] [--weight-set human|animal]
                              [--fp32-only] [--target-cc 8.6,8.9,12.0] [--force]

One engine per graph, written to OUT as ``<graph>.engine`` and described in ``OUT/engines.json``
(cache key, source ONNX, precision, build seconds, size, I/O). With TensorRT for RTX the build is
ahead of time and needs no GPU; the default target is any RTX-class GPU (see ``trt_compat``).

Engines are cached: the key is the TensorRT flavour and version, the target GPUs, the source ONNX
file's sha256 (which covers the weights), the fingerprint of the weight set the graphs were exported
from (from the ONNX ``manifest.json``) and ``BUILD_RECIPE``. An engine whose key is unchanged (and
whose file is intact) is not rebuilt, and the log says so.

Weight sets: ``--weight-set animal`` builds the animal networks' engines into OUT/animal from the
graphs in ONNX_DIR/animal (ONNX_DIR defaults to OUT/onnx), the folders ``make_backend`` looks in
when given OUT as ``--engine-dir`` (``engines.select.weight_set_dir``); the human set stays in OUT.
Graphs whose manifest names another set are refused.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from engines.backend_onnx import MANIFEST
from engines.graphs import GRAPH_SPECS, MLP_GRAPHS
from engines.options import add_engine_arguments
from engines.select import weight_set_dir
from engines.tensorrt_runtime import ENGINES_JSON, ENGINES_JSON_FORMAT, read_engines_json
from engines.weights import file_sha256

from . import trt_compat
from .files import write_atomic
from .trt_compat import BuildTarget, EngineBuildError, TensorRTBuilder, TensorRTUnavailable

log = logging.getLogger(__name__)

# Graph stems written by ``python -m export onnx`` (``<stem>.onnx`` and ``<stem>.fp16.onnx``, names
# and I/O in ``engines.graphs.GRAPH_SPECS``); engines take the same names.
GRAPHS: tuple[str, ...] = tuple(GRAPH_SPECS)
# Graphs built from their fp32 ONNX by default, even when an fp16 one exists. M runs once per frame
# on a 256 crop (cheap either way), and its outputs go straight into the geometry: head pose is an
# expectation over 66 softmax bins of 3 degrees each, so small logit errors become visible jitter,
# and ConvNeXt-V2's GRN takes global L2 norms that are fragile in half precision. The MLPs cost
# next to nothing in any precision and also feed the keypoints directly, so they stay fp32 as in
# the torch and ONNX Runtime backends.
FP32_GRAPHS: frozenset[str] = frozenset({"motion_extractor", *MLP_GRAPHS})
# Bump when the way engines are built changes (builder settings, network flags): invalidates caches.
BUILD_RECIPE = 1
# Exit statuses: 2 for a problem the user can fix (like main.py), 1 for a failed build.
EXIT_USAGE, EXIT_BUILD = 2, 1


class BuildSetupError(RuntimeError):
    """Something the user can fix before building: missing graphs, exporter or weights."""


@dataclass(frozen=True)
class BuildJob:
    """One engine to build: its name, the ONNX graph it comes from and that graph's precision."""

    name: str
    onnx: Path
    precision: str          # "fp16" (fp16 graph with fp32 islands) or "fp32"


@dataclass
class EngineRecord:
    """One entry of ``engines.json``."""

    name: str
    file: str
    key: str
    onnx: str
    onnx_sha256: str
    precision: str
    flavour: str
    version: str
    target: str
    build_seconds: float
    size_bytes: int
    sha256: str
    io: dict[str, Any] = field(default_factory=dict)
    weight_set: str = "human"
    weights_sha256: str = ""        # the set's fingerprint from the ONNX manifest ("" without one)


@dataclass(frozen=True)
class BuildOutcome:
    record: EngineRecord
    built: bool             # False: the cached engine was kept


# --------------------------------------------------------------------------- fingerprints
def _external_data_files(onnx_path: Path) -> list[Path]:
    """Files holding tensors of this graph outside the .onnx (large graphs may use them), so that
    the fingerprint also covers weights stored there."""
    import onnx  # optional heavy package, imported where it is used

    model = onnx.load(str(onnx_path), load_external_data=False)
    locations: set[str] = set()

    def visit_tensor(t: Any) -> None:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            locations.update(e.value for e in t.external_data if e.key == "location")

    def visit_graph(g: Any) -> None:
        for t in g.initializer:
            visit_tensor(t)
        for node in g.node:
            for a in node.attribute:
                if a.HasField("t"):
                    visit_tensor(a.t)
                for t in a.tensors:
                    visit_tensor(t)
                if a.HasField("g"):
                    visit_graph(a.g)
                for sub in a.graphs:
                    visit_graph(sub)

    visit_graph(model.graph)
    return [onnx_path.parent / loc for loc in sorted(locations)]


def onnx_fingerprint(onnx_path: str | Path) -> str:
    """sha256 of the ONNX file; when it keeps weights in external files, of those too."""
    onnx_path = Path(onnx_path)
    external = _external_data_files(onnx_path)
    if not external:
        return file_sha256(onnx_path)
    h = hashlib.sha256(file_sha256(onnx_path).encode())
    for path in external:
        h.update(f"\n{path.name}:{file_sha256(path)}".encode())
    return h.hexdigest()


def engine_cache_key(flavour: str, version: str, target_key: str, onnx_sha256: str,
                     recipe: int = BUILD_RECIPE, weights_sha256: str = "") -> str:
    """The cache key of one engine: any change of these inputs means a rebuild. ``weights_sha256``
    is the weight set's fingerprint (``engines.weights.weights_fingerprint``) the graph was exported
    from, "" when unknown."""
    fields = {"flavour": flavour, "version": version, "target": target_key, "onnx_sha256": onnx_sha256,
              "recipe": recipe, "weights_sha256": weights_sha256}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------- engines.json
def write_engines_json(out_dir: Path, records: dict[str, EngineRecord | dict[str, Any]]) -> None:
    engines = {name: asdict(r) if isinstance(r, EngineRecord) else r for name, r in sorted(records.items())}
    text = json.dumps({"format": ENGINES_JSON_FORMAT, "engines": engines}, indent=2) + "\n"
    write_atomic(out_dir / ENGINES_JSON, text.encode())


def _cached(entry: dict[str, Any] | None, key: str, out_dir: Path) -> bool:
    """The recorded engine has this key and its file is intact."""
    if not entry or entry.get("key") != key:
        return False
    path = out_dir / entry.get("file", "")
    return (path.is_file() and path.stat().st_size == entry.get("size_bytes")
            and file_sha256(path) == entry.get("sha256"))


# --------------------------------------------------------------------------- building
def _display_path(path: Path, out_dir: Path) -> str:
    try:
        return str(path.resolve().relative_to(out_dir.resolve()))
    except ValueError:
        return str(path.resolve())


def build_one(api: TensorRTBuilder, job: BuildJob, out_dir: Path, target: BuildTarget, onnx_sha256: str,
              key: str, source: ExportedWeights | None = None) -> EngineRecord:
    """Build ``job``'s engine into ``out_dir`` and describe it."""
    start = time.perf_counter()
    data, io = api.build_engine(job.onnx, target)
    seconds = time.perf_counter() - start
    file = f"{job.name}.engine"
    write_atomic(out_dir / file, data)
    source = source or ExportedWeights()
    return EngineRecord(name=job.name, file=file, key=key, onnx=_display_path(job.onnx, out_dir),
                        onnx_sha256=onnx_sha256, precision=job.precision, flavour=api.flavour,
                        version=api.version, target=target.key, build_seconds=round(seconds, 2),
                        size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), io=io,
                        weight_set=source.weight_set, weights_sha256=source.sha256)


def build_engines(api: TensorRTBuilder, jobs: Sequence[BuildJob], out_dir: str | Path, target: BuildTarget,
                  force: bool = False, source: ExportedWeights | None = None) -> list[BuildOutcome]:
    """Build every job's engine into ``out_dir`` unless its cached engine has the same key
    (``source``: the weights the graphs were exported from, part of the key); ``engines.json`` is
    rewritten after each engine, so an interrupted run keeps what it built."""
    source = source or ExportedWeights()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records: dict[str, Any] = dict(read_engines_json(out_dir)["engines"])
    outcomes = []
    log.info("%s %s, target: %s", api.flavour, api.version, target.describe())
    with logging_redirect_tqdm():
        for job in tqdm(jobs, desc="engines", unit="engine", disable=None):
            onnx_sha = onnx_fingerprint(job.onnx)
            key = engine_cache_key(api.flavour, api.version, target.key, onnx_sha, weights_sha256=source.sha256)
            if not force and _cached(records.get(job.name), key, out_dir):
                log.info("%s: unchanged (key %s), kept %s", job.name, key[:12], records[job.name]["file"])
                outcomes.append(BuildOutcome(EngineRecord(**records[job.name]), built=False))
                continue
            log.info("%s: building from %s (%s) ...", job.name, job.onnx.name, job.precision)
            record = build_one(api, job, out_dir, target, onnx_sha, key, source)
            log.info("%s: built in %.1f s, %.1f MB -> %s", job.name, record.build_seconds,
                     record.size_bytes / 1e6, out_dir / record.file)
            records[job.name] = record
            write_engines_json(out_dir, records)
            outcomes.append(BuildOutcome(record, built=True))
    return outcomes


# --------------------------------------------------------------------------- ONNX graphs
@dataclass(frozen=True)
class ExportedWeights:
    """The weights a folder of ONNX graphs was exported from, as its ``manifest.json`` records them."""

    weight_set: str = "human"
    sha256: str = ""                # "" for graphs without a manifest (made elsewhere)


def exported_weights(onnx_dir: str | Path) -> ExportedWeights:
    """What ``onnx_dir``'s manifest says about the weights (manifests older than weight sets
    name none: those graphs are the human set's)."""
    try:
        weights = json.loads((Path(onnx_dir) / MANIFEST).read_text()).get("weights", {})
    except (OSError, ValueError, AttributeError):
        return ExportedWeights()
    if not isinstance(weights, dict):
        return ExportedWeights()
    return ExportedWeights(str(weights.get("set", "human")), str(weights.get("sha256", "")))


def plan_jobs(onnx_dir: str | Path, fp32_only: bool = False,
              graphs: Iterable[str] = GRAPHS) -> tuple[list[BuildJob], list[str]]:
    """Which ONNX file each engine is built from: the fp16 graph unless ``fp32_only`` or the graph
    is in ``FP32_GRAPHS`` (or has no fp16 version). Returns the jobs and the missing files."""
    onnx_dir = Path(onnx_dir)
    jobs, missing = [], []
    for name in graphs:
        fp32, fp16 = onnx_dir / GRAPH_SPECS[name].file("fp32"), onnx_dir / GRAPH_SPECS[name].file("fp16")
        if not fp32_only and name not in FP32_GRAPHS and fp16.is_file():
            jobs.append(BuildJob(name, fp16, "fp16"))
        elif fp32.is_file():
            if not fp32_only and name not in FP32_GRAPHS:
                log.info("%s: no fp16 graph in %s, building from the fp32 one", name, onnx_dir)
            jobs.append(BuildJob(name, fp32, "fp32"))
        else:
            missing.append(fp32.name)
    return jobs, missing


def export_onnx_graphs(weights: str | Path | None, onnx_dir: Path, weight_set: str = "human") -> None:
    """Produce ``weight_set``'s ONNX graphs in ``onnx_dir`` (that set's folder) with
    ``export.onnx_export`` (imported only when needed)."""
    if weights is None:
        raise BuildSetupError(f"the ONNX graphs are not in {onnx_dir}; pass --weights DIR to export them "
                              "(or --onnx-dir with the output of `python -m export onnx`)")
    try:
        onnx_export = importlib.import_module("export.onnx_export")
    except ImportError as e:
        raise BuildSetupError(f"the ONNX graphs are not in {onnx_dir} and the ONNX exporter "
                              f"(export/onnx_export.py) cannot be imported ({e}); run `python -m export onnx` "
                              "first and pass its output as --onnx-dir") from None
    log.info("exporting the %s ONNX graphs to %s ...", weight_set, onnx_dir)
    base = onnx_dir if weight_set == "human" else onnx_dir.parent      # the exporter adds the set's folder
    status = onnx_export.main_onnx(["--weights", str(weights), "--out", str(base), "--weight-set", weight_set])
    if status:
        raise BuildSetupError(f"the ONNX export into {onnx_dir} failed (exit status {status})")


# --------------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m export tensorrt",
                                 description="Build TensorRT engines from the ONNX graphs (cached).")
    add_engine_arguments(ap, backend=None, device=None, weights="none; needed only to export missing ONNX graphs",
                         onnx_dir="default: OUT/onnx; another weight set's graphs in DIR/<set>", weight_set=True,
                         path_type=Path)
    ap.add_argument("--out", type=Path, required=True,
                    help="folder for the engines and engines.json (another weight set's: OUT/<set>)")
    ap.add_argument("--fp32-only", action="store_true", help="build every engine from its fp32 graph")
    ap.add_argument("--target-cc", default="",
                    help="TensorRT-RTX: comma list of compute capabilities, e.g. 8.6,8.9,12.0 "
                         f"(default: {trt_compat.RTX_DEFAULT_TARGET}; Turing needs 7.5 explicitly)")
    ap.add_argument("--force", action="store_true", help="rebuild even when the cache key is unchanged")
    return ap


def _configure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")


def run_build(args: argparse.Namespace) -> list[BuildOutcome]:
    """The whole command: ensure the ONNX graphs, resolve the target, build, return the outcomes."""
    api = trt_compat.load()
    target = api.resolve_target([c for c in args.target_cc.split(",") if c.strip()])
    weight_set = getattr(args, "weight_set", "human")
    onnx_dir = weight_set_dir(args.onnx_dir or args.out / "onnx", weight_set)
    jobs, missing = plan_jobs(onnx_dir, args.fp32_only)
    if missing:
        log.info("missing in %s: %s", onnx_dir, ", ".join(missing))
        export_onnx_graphs(args.weights, onnx_dir, weight_set)
        jobs, missing = plan_jobs(onnx_dir, args.fp32_only)
        if missing:
            raise BuildSetupError(f"the ONNX export did not write {', '.join(missing)} into {onnx_dir}")
    source = exported_weights(onnx_dir)
    if source.weight_set != weight_set:
        raise BuildSetupError(f"the graphs in {onnx_dir} were exported from the {source.weight_set} weights, "
                              f"not the {weight_set} ones; export them with `python -m export onnx "
                              f"--weight-set {weight_set}`")
    return build_engines(api, jobs, weight_set_dir(args.out, weight_set), target, force=args.force, source=source)


def main_tensorrt(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _configure_logging()
    try:
        outcomes = run_build(args)
    except (BuildSetupError, TensorRTUnavailable, ValueError) as e:
        log.error("error: %s", e)
        return EXIT_USAGE
    except EngineBuildError as e:
        log.error("error: %s", e)
        return EXIT_BUILD
    built = sum(o.built for o in outcomes)
    log.info("%d engine(s) built, %d unchanged; %s", built, len(outcomes) - built,
             weight_set_dir(args.out, args.weight_set) / ENGINES_JSON)
    return 0


if __name__ == "__main__":
    sys.exit(main_tensorrt())
