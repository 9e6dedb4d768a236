"""Layers point one way (ARCHITECTURE.md's table, in this order): ``engines`` imports neither ``app``
nor ``export``; ``export`` uses ``engines`` only; within ``app`` a part imports only parts listed
before it in ``APP_LAYERS``. Every import counts: at module level, inside a function, under
``TYPE_CHECKING``, by statement or by ``importlib.import_module``. A few seams are checked by what
an import really loads."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from support import REPO_ROOT

# app's parts, lowest first; a module belongs to the longest entry its name starts with
APP_LAYERS = (
    "app.settings",        # the parameter object
    "app.cli",             # console, option declarations, output paths
    "app.imaging",         # image files, host <-> device, person segmentation, easing
    "app.face",            # landmarks, crop and paste-back geometry, ratios, the driving crop
    "app.avatar",          # the avatar's face, its preparation through the networks, loading
    "app.compositing",     # device paste-back, output background, the finishing step
    "app.animation",       # frame types, the animator and its parts
    "app.live",            # the threaded loop, capture, sinks, replay, wiring
    "app.remote",          # the wire protocol and the client
    "app.remote.server",   # the render server
    "app.run",             # where animation runs, headless, the window's session
    "app.ui",              # the window
    "app.diagnostics",     # benchmarks and checks
)


def imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, the source of ``module``;
    ``from X import name`` gives ``X.name`` (it may name a submodule)."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found += [(node.lineno, f"{base}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0] if node.args else None
            if name in ("import_module", "__import__") and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append((node.lineno, arg.value))
    return found


def app_layer(module: str) -> int | None:
    """Index in ``APP_LAYERS`` of ``module``'s part, None outside ``app``'s parts."""
    matches = [i for i, name in enumerate(APP_LAYERS) if module == name or module.startswith(name + ".")]
    return max(matches, key=lambda i: len(APP_LAYERS[i])) if matches else None


def within(module: str, *roots: str) -> bool:
    return any(module == root or module.startswith(root + ".") for root in roots)


def sources(folder: str) -> list[tuple[str, Path]]:
    files = sorted((REPO_ROOT / folder).rglob("*.py"))
    assert files, f"no {folder}/ sources found"
    return [(".".join(p.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__"), p) for p in files]


def violations(folder: str, allowed) -> list[str]:
    """``folder:line: module -> target`` for every import ``allowed(module, target)`` refuses."""
    bad = []
    for module, path in sources(folder):
        for line, target in imports(path.read_text(encoding="utf-8"), module, path.name == "__init__.py"):
            if not allowed(module, target):
                bad.append(f"{path.relative_to(REPO_ROOT)}:{line}: {target}")
    return bad


def test_the_check_sees_every_kind_of_import() -> None:
    source = ("import export.trt_compat\n"
              "from export import trt_compat\n"
              "def f():\n"
              "    from ..live.pipeline import Pipeline\n"
              "    return importlib.import_module('app.ui.app')\n"
              "if TYPE_CHECKING:\n"
              "    from . import client\n")
    assert imports(source, "app.remote.server.session") == [
        (1, "export.trt_compat"), (2, "export.trt_compat"), (4, "app.remote.live.pipeline.Pipeline"),
        (7, "app.remote.server.client"), (5, "app.ui.app")]
    assert imports("from . import protocol\n", "app.remote", is_package=True) == [(1, "app.remote.protocol")]
    assert app_layer("app.remote.server.cli") == APP_LAYERS.index("app.remote.server")
    assert app_layer("app.remote.client") == APP_LAYERS.index("app.remote")
    assert app_layer("application") is None


def test_engines_import_nothing_from_export_or_app() -> None:
    bad = violations("engines", lambda module, target: not within(target, "app", "export"))
    assert bad == [], "engines/ must not import export/ or app/ (both depend on engines): " + ", ".join(bad)


def test_export_uses_engines_never_app() -> None:
    bad = violations("export", lambda module, target: not within(target, "app"))
    assert bad == [], "export/ must not import app/: " + ", ".join(bad)


def test_every_app_module_belongs_to_a_part() -> None:
    """A new folder or module at app's top level gets a place in ``APP_LAYERS`` (and in
    ARCHITECTURE's table), or the layer check below would not see it."""
    loose = [module for module, _ in sources("app") if module != "app" and app_layer(module) is None]
    assert loose == [], "add these to APP_LAYERS: " + ", ".join(loose)


def test_app_parts_import_only_parts_below_them() -> None:
    def allowed(module: str, target: str) -> bool:
        mine, theirs = app_layer(module), app_layer(target)
        if within(target, "export"):
            return False
        return mine is None or theirs is None or theirs <= mine

    bad = violations("app", allowed)
    assert bad == [], "an app/ part imports one above it (see APP_LAYERS): " + ", ".join(bad)


def test_face_knows_no_networks_and_no_animation() -> None:
    bad = violations("app/face", lambda module, target: not within(target, "engines", "app.animation"))
    assert bad == [], ", ".join(bad)


def test_ui_imports_no_networks() -> None:
    """The window's modules never reach the networks themselves: the renderer does."""
    bad = violations("app/ui", lambda module, target: not within(
        target, "engines", "torch", "app.animation.animator", "app.avatar.prepared"))
    assert bad == [], ", ".join(bad)


def test_the_remote_protocol_and_client_load_neither_ray_nor_the_local_animator() -> None:
    """What importing them really loads (in a fresh interpreter), not only what they name."""
    code = ("import json, sys\n"
            "import app.remote.protocol, app.remote.client\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    forbidden = [m for m in loaded if within(m, "ray", "app.animation.animator", "app.remote.server")]
    assert forbidden == []
