"""The render server's deployment files (deploy/) and wss://: the Serve config file validates
against Ray's own schema and runs with the stub backend; the KubeRay example embeds that config;
``main.py serve --tls-cert/--tls-key`` serves wss:// to a client that trusts the certificate and to
no other; the remote benchmark's image comparison and loop hook. Servers listen on 127.0.0.1 and
are always stopped (``LocalServer``); the tests that start one are marked ``slow``."""
from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("ray.serve", reason="the render server needs requirements-server.txt")

from pydantic import BaseModel  # noqa: E402  (installed with Ray)
from ray._common.utils import import_attr  # noqa: E402
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary  # noqa: E402
from ray.serve.schema import ServeDeploySchema  # noqa: E402
from support import REPO_ROOT  # noqa: E402

from app.remote import protocol as p  # noqa: E402
from app.remote.server import deployment  # noqa: E402
from app.remote.server.local_server import LocalServer, free_port, serve_command  # noqa: E402
from app.remote.server.options import TOKEN_ENV, ServerOptions  # noqa: E402

SERVE_CONFIG = REPO_ROOT / "deploy" / "serve_config.yaml"
KUBERAY = REPO_ROOT / "deploy" / "kuberay.yaml"
TOKEN = "deploy-test-token-0123456789"


def load_serve_config() -> dict[str, Any]:
    return yaml.safe_load(SERVE_CONFIG.read_text())


def unknown_keys(model: type[BaseModel], data: Any, where: str = "") -> list[str]:
    """Keys in ``data`` that ``model`` (a pydantic schema) has no field for, recursively. Ray's
    schemas ignore unknown keys (forward compatibility), so a misspelt option would pass
    validation and be dropped without a word."""
    if not isinstance(data, dict):
        return []
    fields = model.model_fields
    names = {alias for name, f in fields.items() for alias in (name, f.alias) if alias}
    found = [f"{where}{key}" for key in data if key not in names]
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            continue
        for sub in _models(field.annotation):
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                label = f"{where}{key}[{i}]." if isinstance(value, list) else f"{where}{key}."
                found += unknown_keys(sub, item, label)
    return found


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models inside a field's type (``Optional[X]``, ``List[X]``, ``Union[...]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models(arg)]


def test_serve_config_follows_rays_schema_and_our_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    raw = load_serve_config()
    config = ServeDeploySchema.model_validate(raw)
    assert unknown_keys(ServeDeploySchema, raw) == []
    assert config.http_options.host == "0.0.0.0" and config.http_options.port == 8000
    (application,) = config.applications
    assert application.import_path == "app.remote.server.deployment:build_app"
    # the token comes from the environment, never from the file
    assert "token" not in application.args and "env_vars" not in application.runtime_env
    assert set(application.args) <= set(ServerOptions.__dataclass_fields__)
    assert application.args["device"] == "cuda"
    assert application.args["preload"] == ["human"]          # the animal set loads on first use

    # the builder Ray calls accepts exactly these args and binds our deployment
    built = call_user_app_builder_with_args_if_necessary(import_attr(application.import_path), application.args)
    assert built._bound_deployment.name == deployment.RenderServer.name
    assert application.deployment_names == [deployment.RenderServer.name]

    (render,) = application.deployments
    assert render.ray_actor_options.num_gpus == 1
    scaling = render.autoscaling_config
    sessions = application.args["max_sessions"]
    # a session is one ongoing request: aim below a full replica, admit a little above it
    assert 0 < scaling["target_ongoing_requests"] <= sessions < render.max_ongoing_requests
    assert 1 <= scaling["min_replicas"] <= scaling["max_replicas"]


def test_unknown_keys_finds_a_misspelt_option() -> None:
    raw = load_serve_config()
    raw["applications"][0]["deployments"][0]["ray_actor_options"]["num_gpu"] = 1
    raw["http_options"]["prot"] = 8000
    ServeDeploySchema.model_validate(raw)        # Ray lets both through
    assert unknown_keys(ServeDeploySchema, raw) == [
        "http_options.prot", "applications[0].deployments[0].ray_actor_options.num_gpu"]


def test_builder_rejects_an_unknown_arg() -> None:
    with pytest.raises(ValueError, match="unknown option"):
        deployment.build_app({**load_serve_config()["applications"][0]["args"], "max_sesions": 2})


def build_config_app() -> Any:
    """What Ray does with the config file's application: call our builder with its args."""
    (application,) = ServeDeploySchema.model_validate(load_serve_config()).applications
    return call_user_app_builder_with_args_if_necessary(import_attr(application.import_path), application.args)


def test_builder_fails_closed_without_a_long_enough_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve deploy`` of the file on a cluster without AVATARCAM_TOKEN: the application refuses
    to build (DEPLOY_FAILED in ``serve status``) instead of serving every session without one."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(ValueError, match=f"no token, refusing to serve: set {TOKEN_ENV}"):
        build_config_app()
    monkeypatch.setenv(TOKEN_ENV, "fifteen-chars-x")
    with pytest.raises(ValueError, match="at least 16 characters"):
        build_config_app()
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert build_config_app()._bound_deployment.name == deployment.RenderServer.name


def test_builder_builds_on_loopback_only_or_with_a_token_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    args = load_serve_config()["applications"][0]["args"]
    (options,) = deployment.build_app({**args, "loopback_only": True})._bound_deployment.init_args
    assert options.loopback_only and options.token is None
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    (options,) = deployment.build_app({**args, "token_file": str(token_file)})._bound_deployment.init_args
    assert options.token is None and options.replica_token() == TOKEN       # read by the replica, not baked in


def test_loopback_only_is_refused_where_the_proxies_listen_elsewhere() -> None:
    loopback = ServerOptions(loopback_only=True)
    for host in ("127.0.0.1", "::1", "localhost", None):           # None: not known where the builder runs
        deployment.check_loopback_only(loopback, host)
    with pytest.raises(ValueError, match="loopback_only, but Serve's proxies listen on 0.0.0.0"):
        deployment.check_loopback_only(loopback, "0.0.0.0")
    deployment.check_loopback_only(ServerOptions(token="t" * 16), "0.0.0.0")


SERVE_CONFIG_CPU = REPO_ROOT / "deploy" / "serve_config.cpu.yaml"


def test_the_cpu_config_is_the_main_one_but_for_its_dry_run_lines() -> None:
    """deploy/serve_config.cpu.yaml (the cluster dry run) differs from the main file only in the
    backend, the device, the weights and the resources, as its comments say."""
    cpu = yaml.safe_load(SERVE_CONFIG_CPU.read_text())
    ServeDeploySchema.model_validate(cpu)
    assert unknown_keys(ServeDeploySchema, cpu) == []
    expected = load_serve_config()
    (application,) = expected["applications"]
    application["args"].update(weights=None, backend="stub", device="cpu")
    (render,) = application["deployments"]
    render["ray_actor_options"]["num_gpus"] = 0
    render["max_replicas_per_node"] = 1
    render["autoscaling_config"].update(min_replicas=2, max_replicas=2)
    assert cpu == expected
    dry_run = [line for line in SERVE_CONFIG_CPU.read_text().splitlines() if "# dry run" in line]
    assert len(dry_run) == 7, dry_run


def local_variant(config: dict[str, Any], port: int) -> dict[str, Any]:
    """The config as this machine can run it: loopback, a free port, the stub backend on the CPU,
    no GPU asked for, one replica."""
    config = copy.deepcopy(config)
    config["http_options"].update(host="127.0.0.1", port=port)
    (application,) = config["applications"]
    application["args"] = {**application["args"], "backend": "stub", "device": "cpu", "weights": None}
    (render,) = application["deployments"]
    render["ray_actor_options"]["num_gpus"] = 0
    render["autoscaling_config"].update(min_replicas=1, max_replicas=1)
    return config


@pytest.mark.integration
def test_serve_config_runs_with_serve_run(tmp_path: Path) -> None:
    """``serve run`` of the file (stub backend, loopback): healthy, and the token read from
    AVATARCAM_TOKEN guards the sessions."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    port = free_port()
    config_path = tmp_path / "serve_config.yaml"
    config_path.write_text(yaml.safe_dump(local_variant(load_serve_config(), port)))
    command = [sys.executable, "-c", "from ray.serve.scripts import cli; cli()", "run", "--address", "local",
               str(config_path)]
    env = {"PYTHONPATH": str(REPO_ROOT), TOKEN_ENV: TOKEN, "RAY_USAGE_STATS_ENABLED": "0"}
    # started elsewhere than the repository: the application is found through PYTHONPATH, as on a cluster
    with LocalServer(command, f"http://127.0.0.1:{port}", tmp_path / "serve.log", env=env, cwd=tmp_path) as server:
        health = server.health()
        assert health is not None and health["status"] == "ok", server.log_tail()
        assert health["backend"] == "stub"
        assert health["max_sessions"] == load_serve_config()["applications"][0]["args"]["max_sessions"]
        url = f"ws://127.0.0.1:{port}/v1/session"
        with pytest.raises(InvalidStatus) as refused:
            with connect(url, open_timeout=10):
                pass
        assert refused.value.response.status_code == 403
        with connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, open_timeout=10) as ws:
            ws.send(p.text({"type": "hello", "version": p.VERSION, "format": "jpeg"}))
            assert p.parse_text(ws.recv(timeout=10))["type"] == "welcome"


def load_rayservice() -> dict[str, Any]:
    (service,) = [d for d in yaml.safe_load_all(KUBERAY.read_text()) if d]
    return service


def test_kuberay_example_embeds_the_serve_config() -> None:
    import ray

    service = load_rayservice()
    assert (service["apiVersion"], service["kind"]) == ("ray.io/v1", "RayService")
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert embedded == load_serve_config()
    ServeDeploySchema.model_validate(embedded)
    assert unknown_keys(ServeDeploySchema, embedded) == []

    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == ray.__version__            # the version requirements-server.txt pins
    (workers,) = cluster["workerGroupSpecs"]
    pods = [cluster["headGroupSpec"]["template"]["spec"], workers["template"]["spec"]]
    containers = [c for pod in pods for c in pod["containers"]]
    assert len({c["image"] for c in containers}) == 1
    for container in containers:
        (token,) = [e for e in container["env"] if e["name"] == TOKEN_ENV]
        assert "value" not in token and set(token["valueFrom"]["secretKeyRef"]) == {"name", "key"}
    (worker,) = workers["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    scaling = embedded["applications"][0]["deployments"][0]["autoscaling_config"]
    assert workers["maxReplicas"] == scaling["max_replicas"]
    weights = embedded["applications"][0]["args"]["weights"]
    assert [m["mountPath"] for m in worker["volumeMounts"]] == [weights]


def self_signed_certificate(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A certificate for ``host`` (IP subject alternative name) and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory):
    """``main.py serve`` with the stub backend serving wss:// on 127.0.0.1 with a self-signed
    certificate: (port, certificate path)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = self_signed_certificate(folder)
    port = free_port()
    command = serve_command(port, "--backend", "stub", "--device", "cpu", "--tls-cert", str(cert),
                            "--tls-key", str(key), "--token", TOKEN)
    with LocalServer(command, f"https://127.0.0.1:{port}", folder / "serve.log", ca_file=str(cert),
                     env={"RAY_USAGE_STATS_ENABLED": "0"}) as server:
        yield port, cert
        assert server.health()["sessions"] == 0        # the clients' sessions ended with them


def client_args(port: int, examples: Path, d0: Path, out: Path, *extra: str) -> list[str]:
    return ["--headless", "--remote", f"wss://127.0.0.1:{port}", "--token", TOKEN, "--avatar",
            str(examples / "s0.jpg"), "--camera", str(d0), "--max-frames", "5", "--record", str(out),
            "--no-virtual-camera", *extra]


@pytest.mark.integration
def test_wss_client_that_trusts_the_certificate_records(tls_server, examples: Path, d0: Path,
                                                        tmp_path: Path) -> None:
    import cv2
    from support.fakes import run_main

    port, cert = tls_server
    out = tmp_path / "out.mp4"
    r = run_main(*client_args(port, examples, d0, out, "--remote-ca", str(cert)), timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"rendering on wss://127.0.0.1:{port}/v1/session" in r.stderr
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    cap.release()


@pytest.mark.integration
def test_wss_client_without_the_certificate_fails_in_one_line(tls_server, examples: Path, d0: Path,
                                                              tmp_path: Path) -> None:
    from support.fakes import run_main

    port, _ = tls_server
    out = tmp_path / "out.mp4"
    r = run_main(*client_args(port, examples, d0, out), timeout=120)
    assert r.returncode == 2
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and "does not trust" in lines[0] and "--remote-ca" in lines[0]
    assert not out.exists()


def test_bench_compares_images_by_max_difference_and_psnr() -> None:
    import math

    import numpy as np

    from app.diagnostics.remote_bench import compare

    local = [np.zeros((4, 5, 3), np.uint8), np.full((4, 5, 3), 7, np.uint8)]
    same = compare(local, [x.copy() for x in local])
    assert same["identical"] and same["max_abs_diff"] == 0 and same["min_psnr_db"] == math.inf
    other = [x.copy() for x in local]
    other[1][0, 0, 0] = 17
    diff = compare(local, other)
    assert not diff["identical"] and diff["max_abs_diff"] == 10
    assert diff["psnr_db"][0] == math.inf
    assert diff["min_psnr_db"] == pytest.approx(10 * math.log10(255 ** 2 / (100 / 60)))
    with pytest.raises(RuntimeError, match="2 local images but 1 remote"):
        compare(local, other[:1])


def test_bench_loop_runs_the_animator_it_is_given(avatar_face) -> None:
    """``app.diagnostics.bench.run_loop(animator=...)``: what the remote benchmark runs its RemoteAnimator with."""
    import numpy as np
    from support.fakes import make_animator

    from app.diagnostics.bench import run_loop
    from app.live.replay import ReplayLandmarks
    from engines.backend import StubBackend

    animator, _ = make_animator(avatar_face, StubBackend())
    calls = []
    process = animator.process
    animator.process = lambda face, t: calls.append(t) or process(face, t)
    frames = [np.full((72, 128, 3), 60, np.uint8)] * 3
    report = run_loop(None, None, frames, ReplayLandmarks([None]), lossless_frames=3, animator=animator)
    assert len(calls) == 3 and report["frames_out"] == 3 and report["device"] == "remote"
