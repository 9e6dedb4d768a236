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


def test_the_token_rule_is_declared_once_and_cli_uses_it() -> None:
    from app.remote.server import cli
    from app.remote.server.options import MIN_TOKEN_LENGTH, check_token

    assert cli.MIN_TOKEN_LENGTH is MIN_TOKEN_LENGTH == 16
    assert check_token(None) is None and check_token("x" * 16) == "x" * 16
    with pytest.raises(ValueError, match="at least 16 characters"):
        check_token("x" * 15)
    args = main.parse_serve_args(["--token", "x" * 15])
    with pytest.raises(ValueError, match="at least 16 characters"):
        cli.read_token(args)


LONG = "a-token-of-24-characters"


@pytest.mark.parametrize(("args", "env", "error"), [
    ({}, None, "no token, refusing to serve"),                                 # fail closed
    ({}, "short-token", "at least 16 characters"),
    ({"loopback_only": True}, "short-token", "at least 16 characters"),       # a token given is a token checked
    ({"token_file": "/nonexistent/avatarcam-token"}, LONG, "token_file /nonexistent/avatarcam-token"),
])
def test_access_fails_closed(monkeypatch: pytest.MonkeyPatch, args: dict, env: str | None, error: str) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    if env is not None:
        monkeypatch.setenv(TOKEN_ENV, env)
    opts = ServerOptions.from_args(args)
    with pytest.raises(ValueError, match=error) as refused:
        opts.check_access()
    assert "\n" not in str(refused.value) and (env is None or env not in str(refused.value))


def test_access_with_a_token_a_token_file_or_loopback_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    ServerOptions.from_args({"loopback_only": True}).check_access()
    assert ServerOptions.from_args({"loopback_only": True}).replica_token() is None
    monkeypatch.setenv(TOKEN_ENV, LONG)
    opts = ServerOptions.from_args({})
    opts.check_access()
    assert opts.replica_token() == LONG
    # a token file is read by each replica; the environment's token is not baked in beside it
    token_file = tmp_path / "token"
    token_file.write_text("from-the-file-0123456789\n")
    opts = ServerOptions.from_args({"token_file": str(token_file)})
    opts.check_access()
    assert opts.token is None and opts.replica_token() == "from-the-file-0123456789"
    assert "from-the-file" not in repr(opts.replica_token())
    token_file.write_text("short\n")
    with pytest.raises(ValueError, match=f"the token in {token_file} must have at least 16"):
        opts.replica_token()
