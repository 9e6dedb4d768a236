"""The render server's options, declared once (``ServerOptions``): ``main.py serve``'s flags and
defaults and the render service's defaults come from it; it loads without Ray."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import main
from app.remote.server import options
from app.remote.server.options import DEFAULTS, TOKEN_ENV, ServerOptions, server_args
from app.remote.server.service import RenderService


def test_serve_cli_defaults_are_the_server_options_defaults() -> None:
    args = main.parse_serve_args([])
    assert server_args(args) == {"max_sessions": DEFAULTS.max_sessions, "max_batch": DEFAULTS.max_batch,
                                 "idle_timeout_s": DEFAULTS.idle_timeout_s}
    assert (args.backend, args.device) == (DEFAULTS.backend, DEFAULTS.device)
    # the values they always had
    assert (DEFAULTS.max_sessions, DEFAULTS.max_batch, DEFAULTS.idle_timeout_s) == (8, 8, 30.0)
    chosen = main.parse_serve_args(["--max-sessions", "3", "--max-batch", "1", "--idle-timeout", "2.5"])
    assert server_args(chosen) == {"max_sessions": 3, "max_batch": 1, "idle_timeout_s": 2.5}
    assert ServerOptions.from_args(server_args(chosen)).max_batch == 1
    with pytest.raises(SystemExit):
        main.parse_serve_args(["--max-sessions", "many"])


def test_the_render_service_takes_its_defaults_from_the_options() -> None:
    parameters = inspect.signature(RenderService).parameters
    assert parameters["max_sessions"].default == DEFAULTS.max_sessions
    assert parameters["idle_timeout_s"].default == DEFAULTS.idle_timeout_s


def test_from_args_names_unknown_options_and_reads_the_token_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown option.*max_sesions"):
        ServerOptions.from_args({"max_sesions": 2})
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert ServerOptions.from_args({}).token is None
    monkeypatch.setenv(TOKEN_ENV, "from-the-environment")
    opts = ServerOptions.from_args({"max_sessions": 2})
    assert opts.token == "from-the-environment" and "from-the-environment" not in repr(opts)
    assert all(f.metadata["help"] for f in ServerOptions.__dataclass_fields__.values())


def test_the_options_load_without_ray() -> None:
    tree = ast.parse(Path(options.__file__).read_text(encoding="utf-8"))
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in imported if m.split(".")[0] in ("ray", "starlette", "fastapi")]
