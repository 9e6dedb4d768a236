"""``python -m export COMMAND ...``: the export tools behind one entry point.

Each subcommand lives in its own module as ``main_<command>(argv: list[str]) -> int``, which parses
its own options (so ``python -m export onnx --help`` is that module's help). ``SUBCOMMANDS`` maps a
command to "module:function" and a one-line description; a module is imported only when its command
runs, and a command whose module is absent from this checkout is not offered.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence

# Register new subcommands here: command -> ("package.module:function", help line).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "onnx": ("export.onnx_export:main_onnx",
             "export the networks to ONNX (fp32 and fp16) and verify them against PyTorch"),
    "tensorrt": ("export.tensorrt_build:main_tensorrt",
                 "build TensorRT engines from the ONNX graphs"),
}


def _module_present(target: str) -> bool:
    module = target.split(":", 1)[0]
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def available_subcommands() -> dict[str, tuple[str, str]]:
    """The registered subcommands whose module exists (found without importing it)."""
    return {name: entry for name, entry in SUBCOMMANDS.items() if _module_present(entry[0])}


def load_subcommand(name: str) -> Callable[[list[str]], int]:
    module, func = SUBCOMMANDS[name][0].split(":", 1)
    return getattr(importlib.import_module(module), func)


def build_parser(commands: dict[str, tuple[str, str]]) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m export",
                                 description="Convert the LivePortrait networks for faster inference engines.",
                                 epilog="`python -m export COMMAND --help` shows the options of a command.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (_, help_line) in commands.items():
        sub.add_parser(name, help=help_line, add_help=False)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = available_subcommands()
    if argv and argv[0] in commands:
        return int(load_subcommand(argv[0])(argv[1:]) or 0)
    parser = build_parser(commands)
    if not argv:
        parser.print_usage(sys.stderr)
        parser.exit(2, f"{parser.prog}: error: a command is required ({', '.join(commands)})\n")
    parser.parse_args(argv)       # --help, or an error (exit 2) for an unknown command
    return 2


if __name__ == "__main__":
    sys.exit(main())
