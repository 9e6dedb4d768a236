"""Layers point one way: no module under ``engines/`` imports ``export`` (the build tooling) or
``app`` (at module level or inside a function, by statement or by ``importlib.import_module``)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("export", "app")


def _is_forbidden(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in FORBIDDEN)


def forbidden_imports(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import of ``export`` or ``app`` in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if _is_forbidden(a.name)]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and _is_forbidden(node.module):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0] if node.args else None
            if (name in ("import_module", "__import__") and isinstance(arg, ast.Constant)
                    and isinstance(arg.value, str) and _is_forbidden(arg.value)):
                found.append((node.lineno, arg.value))
    return found


def test_the_check_sees_every_kind_of_import() -> None:
    source = ("import export.trt_compat\n"
              "from export import trt_compat\n"
              "def f():\n"
              "    from export.tensorrt_build import ENGINES_JSON\n"
              "    return importlib.import_module('export.onnx_export')\n"
              "import exporter, engines.export_helpers\n"
              "from .export import x\n"
              "from app.animation.animator import Animator\n"
              "import application, app\n")
    assert sorted(line for line, _ in forbidden_imports(source)) == [1, 2, 4, 5, 8, 9]


def test_engines_import_nothing_from_export_or_app() -> None:
    files = sorted((ROOT / "engines").rglob("*.py"))
    assert files, "no engines/ sources found"
    offenders = [f"{path.relative_to(ROOT)}:{line}: {module}"
                 for path in files for line, module in forbidden_imports(path.read_text(encoding="utf-8"))]
    assert offenders == [], "engines/ must not import export/ or app/ (both depend on engines): " + ", ".join(offenders)
