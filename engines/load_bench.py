"""What loading a weight set costs on the CPU: time and resident memory, per set and both at once.

    python -m engines.load_bench --weights DIR [--sets human,animal] [--json out.json]

Each case runs in a fresh child process (memory a process has once held is not reliably given back
to the system, so cases must not share one): ``human``, ``animal`` and ``both`` (the human set,
then the animal one, in one process: what a render server holding both sets pays). A case times
``make_backend("torch", device="cpu", weight_set=...)`` (weights present, no download) and reads
the process's resident memory before and after (RSS delta, the memory that stays) and its peak
(the checkpoint's tensors and the networks' coexist for a moment during loading), next to the
networks' parameter and buffer bytes. Figures go in the README, not here.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .options import add_engine_arguments

log = logging.getLogger("engines.load_bench")

CASES: dict[str, tuple[str, ...]] = {"human": ("human",), "animal": ("animal",), "both": ("human", "animal")}
MB = 1e6


def rss_bytes() -> int:
    """The process's resident memory now (Linux ``/proc``; 0 where that is absent)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


@dataclass
class SetLoad:
    """One weight set loaded in a case: seconds, and bytes."""

    weight_set: str
    seconds: float
    rss_added: int              # resident memory after minus before
    peak_added: int             # peak resident memory minus the resident memory before
    tensor_bytes: int           # the networks' parameters and buffers


@dataclass
class CaseResult:
    case: str
    loads: list[SetLoad] = field(default_factory=list)
    rss_before: int = 0

    @property
    def seconds(self) -> float:
        return sum(load.seconds for load in self.loads)

    @property
    def rss_added(self) -> int:
        return sum(load.rss_added for load in self.loads)


def run_case(case: str, weights: Path) -> CaseResult:
    """Load the sets of ``case`` one after the other in this process (torch on the CPU)."""
    import torch

    from .registry import make_backend

    torch.set_grad_enabled(False)
    result = CaseResult(case, rss_before=rss_bytes())
    keep = []                   # every set stays loaded: "both" holds both
    for weight_set in CASES[case]:
        before = rss_bytes()
        t0 = time.perf_counter()
        backend = make_backend("torch", weights=weights, device="cpu", download=False, weight_set=weight_set)
        seconds = time.perf_counter() - t0
        after = rss_bytes()
        nets = backend.nets    # type: ignore[attr-defined]  # make_backend("torch") is a TorchBackend
        tensors = sum(t.numel() * t.element_size() for f in nets.__dataclass_fields__
                      for module in [getattr(nets, f)] for t in [*module.parameters(), *module.buffers()])
        result.loads.append(SetLoad(weight_set, round(seconds, 3), after - before, peak_rss_bytes() - before,
                                    tensors))
        keep.append(backend)
    return result


def run_in_child(case: str, weights: Path) -> CaseResult:
    """``run_case`` in a fresh interpreter, its result read back as JSON."""
    out = subprocess.run([sys.executable, "-m", "engines.load_bench", "--weights", str(weights), "--case", case],
                         capture_output=True, text=True, check=False, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"case {case} failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return CaseResult(data["case"], [SetLoad(**load) for load in data["loads"]], data["rss_before"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engines.load_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_engine_arguments(ap, backend=None, device=None, weights=None, path_type=Path)   # holding both sets
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}")
    ap.add_argument("--case", choices=tuple(CASES), help=argparse.SUPPRESS)     # the child's own run
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args(argv)
    if args.case:
        logging.basicConfig(level=logging.WARNING)
        result = run_case(args.case, args.weights)
        sys.stdout.write(json.dumps({"case": result.case, "rss_before": result.rss_before,
                                     "loads": [asdict(load) for load in result.loads]}) + "\n")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = []
    for case in args.cases.split(","):
        if case not in CASES:
            ap.error(f"unknown case {case!r}; expected {', '.join(CASES)}")
        try:
            result = run_in_child(case, args.weights)
        except (RuntimeError, subprocess.SubprocessError, ValueError) as e:
            log.error("%s", e)
            return 1
        results.append(result)
        log.info("%-6s %6.2f s  RSS +%5.0f MB (process before: %.0f MB)", case, result.seconds,
                 result.rss_added / MB, result.rss_before / MB)
        for load in result.loads:
            log.info("  %-6s %6.2f s  RSS +%5.0f MB, peak +%5.0f MB, parameters and buffers %5.0f MB",
                     load.weight_set, load.seconds, load.rss_added / MB, load.peak_added / MB, load.tensor_bytes / MB)
    if args.json:
        args.json.write_text(json.dumps([{"case": r.case, "rss_before": r.rss_before,
                                          "loads": [asdict(load) for load in r.loads]} for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
