"""The engine options (``--weights``, ``--device``, ``--backend``, ``--no-download``, ``--onnx-dir``,
``--engine-dir``) and the token options, declared once (``engines.options``,
``app.cli.options``) and used by every entry point with the values they always had."""
from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

import main
from engines.device import DEVICE_CHOICES
from engines.options import add_engine_arguments
from engines.select import BACKEND_KINDS
from export.onnx_export import build_parser as onnx_parser
from export.tensorrt_build import _parser as tensorrt_parser

ROOT = Path(__file__).resolve().parents[1]
SHARED = ("--weights", "--device", "--backend", "--no-download", "--onnx-dir", "--engine-dir", "--token",
          "--token-file")
# where the shared options are declared; the grid-sample micro-benchmark's --device means something
# else (which of its kernels to time: all, cpu or cuda)
DECLARED_IN = {"engines/options.py", "app/cli/options.py"}
OTHER_MEANING = {("engines/ops/bench_grid_sample.py", "--device")}


def declared_options(source: str) -> list[str]:
    """The option strings of every ``add_argument`` call in ``source``."""
    return [arg.value for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument"
            for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]


def test_the_shared_options_are_declared_in_one_place_only() -> None:
    offenders = []
    for path in sorted(ROOT.glob("**/*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(("tests/", ".")) or "/." in rel or rel in DECLARED_IN:
            continue
        offenders += [f"{rel}: {o}" for o in declared_options(path.read_text(encoding="utf-8"))
                      if o in SHARED and (rel, o) not in OTHER_MEANING]
    assert offenders == []


def test_add_engine_arguments_declares_what_is_asked() -> None:
    ap = argparse.ArgumentParser()
    add_engine_arguments(ap, backend="stub", device="cpu", download=True, onnx_dir="x", engine_dir=True)
    args = ap.parse_args([])
    assert (args.weights, args.device, args.backend, args.no_download, args.onnx_dir, args.engine_dir) == \
        (None, "cpu", "stub", False, None, None)
    actions = {a.option_strings[0]: a for a in ap._actions if a.option_strings}
    assert actions["--device"].choices == DEVICE_CHOICES and actions["--backend"].choices == BACKEND_KINDS
    for bad in (["--device", "tpu"], ["--backend", "magic"]):
        with pytest.raises(SystemExit):
            ap.parse_args(bad)

    bare = argparse.ArgumentParser()
    add_engine_arguments(bare, backend=None, device=None, weights=None, path_type=Path)
    assert {a.dest for a in bare._actions} == {"help", "weights"}
    assert bare.parse_args(["--weights", "w"]).weights == Path("w")
    with pytest.raises(SystemExit):
        bare.parse_args([])                                   # weights=None: --weights is required


def test_entry_points_read_the_engine_options_as_before() -> None:
    argv = ["--weights", "w", "--device", "cpu", "--backend", "stub", "--no-download"]
    app_args = main.parse_args([*argv, "--onnx-dir", "o", "--engine-dir", "e", "--token-file", "t"])
    assert (app_args.weights, app_args.device, app_args.backend, app_args.no_download, app_args.onnx_dir,
            app_args.engine_dir, app_args.token, app_args.token_file) == ("w", "cpu", "stub", True, "o", "e", None, "t")
    defaults = main.parse_args([])
    assert (defaults.weights, defaults.device, defaults.backend, defaults.no_download) == (None, "auto", "auto", False)
    serve = main.parse_serve_args([*argv, "--token", "x" * 16])
    assert (serve.weights, serve.device, serve.backend, serve.no_download, serve.token) == \
        ("w", "cpu", "stub", True, "x" * 16)
    assert main.parse_serve_args([]).backend == "auto"
    for parse in (main.parse_args, main.parse_serve_args):
        with pytest.raises(SystemExit):
            parse(["--token", "a", "--token-file", "b"])      # one or the other
    assert onnx_parser().parse_args(["--weights", "w", "--out", "o"]).weights == Path("w")
    built = tensorrt_parser().parse_args(["--out", "o", "--onnx-dir", "g"])
    assert (built.weights, built.onnx_dir) == (None, Path("g"))
