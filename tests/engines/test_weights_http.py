"""The weights download through the real ``huggingface_hub`` client against a local fake hub
(``support.fake_hub``), in process: small stand-in files (their bytes do not matter to the
download), the client pointed at the fake hub by patching the endpoint it read at import. The
child-process path with ``HF_ENDPOINT`` and the kit's real checkpoint files is in
``test_weights_download_e2e.py``.

Every test runs once per weight set in ``WEIGHT_SETS``: the human files and the animal ones (its
F, M, W, G under ``liveportrait_animals/base_models_v1.1/`` and the human stitching file)."""
from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path

import pytest
from support.fake_hub import FakeHub, Fault

from engines import weights

WEIGHT_SETS = [pytest.param(weights.LIVEPORTRAIT, id="liveportrait"),
               pytest.param(weights.LIVEPORTRAIT_ANIMALS, id="liveportrait-animals")]
MIB = 1 << 20
HUB_CHUNK = 10 * MIB      # the client writes what it receives in 10 MiB pieces and resumes from the last one


@pytest.fixture(params=WEIGHT_SETS)
def weight_set(request: pytest.FixtureRequest) -> weights.WeightSet:
    return request.param


@pytest.fixture()
def sources(weight_set: weights.WeightSet, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Stand-in bytes for each file of the set: the second one larger than two of the client's
    pieces (for the resume tests), the others small."""
    root = tmp_path_factory.mktemp("hub_files")
    files = {}
    for i, rel in enumerate(weight_set.files.values()):
        size = 24 * MIB + 12345 if i == 1 else 200_000 + i
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(hashlib.shake_256(rel.encode()).digest(size))
        files[rel] = path
    return files


@pytest.fixture()
def hub(weight_set: weights.WeightSet, sources: dict[str, Path], monkeypatch: pytest.MonkeyPatch):
    with FakeHub({weight_set.repo: sources}) as server:
        server.patch_endpoint(monkeypatch)
        yield server


def big_file(weight_set: weights.WeightSet) -> str:
    return list(weight_set.files.values())[1]


def one_line_with_manual_command(message: str, weight_set: weights.WeightSet, weights_dir: Path) -> None:
    assert "\n" not in message
    assert f"hf download {weight_set.repo} " in message and f"--local-dir {weights_dir}" in message


def leftovers(weights_dir: Path) -> list[Path]:
    """Partial files anywhere under the weights directory (the client's temporary files included)."""
    return [p for p in weights_dir.rglob("*") if p.is_file() and p.name.endswith(".incomplete")]


def test_first_download_fills_the_layout_and_reports_progress(weight_set, sources, hub, tmp_path: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    weights.ensure_weights(tmp_path, weight_set=weight_set, progress=lambda *update: seen.append(update))
    for rel, source in sources.items():
        assert (tmp_path / rel).read_bytes() == source.read_bytes(), rel
        updates = [(done, total) for name, done, total in seen if name == rel]
        size = source.stat().st_size
        assert updates[0] == (0, size) and updates[-1] == (size, size), rel
        assert [d for d, _ in updates] == sorted(d for d, _ in updates), rel     # only ever forward
    big = big_file(weight_set)
    assert len([1 for name, _, _ in seen if name == big]) >= 3      # in pieces, not one jump at the end
    assert not leftovers(tmp_path)
    assert [r.range for r in hub.log(big)] == [None]


def test_dropped_connection_is_resumed_with_a_range_request(weight_set, sources, hub, tmp_path: Path) -> None:
    big = big_file(weight_set)
    cut = int(sources[big].stat().st_size * 0.6)
    hub.faults[big] = Fault(cut_after=cut)
    weights.ensure_weights(tmp_path, weight_set=weight_set)
    first, second = hub.log(big)
    assert (first.range, first.sent) == (None, cut)
    resumed_at = cut // HUB_CHUNK * HUB_CHUNK
    assert resumed_at > 0 and second.range == f"bytes={resumed_at}-" and second.status == 206
    assert (tmp_path / big).read_bytes() == sources[big].read_bytes()


def test_interrupted_download_is_one_line_and_the_next_run_finishes(weight_set, sources, hub,
                                                                    tmp_path: Path) -> None:
    big = big_file(weight_set)
    first_file = next(iter(weight_set.files.values()))
    hub.faults[big] = Fault(cut_after=int(sources[big].stat().st_size * 0.6), status_after_cut=503)
    with pytest.raises(weights.WeightsError) as err:
        weights.ensure_weights(tmp_path, weight_set=weight_set)
    message = str(err.value)
    assert message.startswith(f"could not download {big} from {weight_set.repo} "
                              "(the server answered HTTP 503 (Service Unavailable))")
    one_line_with_manual_command(message, weight_set, tmp_path)
    assert not (tmp_path / big).exists() and not leftovers(tmp_path)     # never half a file at a final path
    assert (tmp_path / first_file).read_bytes() == sources[first_file].read_bytes()     # kept

    del hub.faults[big]
    weights.ensure_weights(tmp_path, weight_set=weight_set)
    assert len(hub.log(first_file)) == 1                 # the file that had arrived is not fetched again
    for rel, source in sources.items():
        assert (tmp_path / rel).read_bytes() == source.read_bytes(), rel


def test_corrupt_file_is_named_and_deleted(weight_set, sources, hub, tmp_path: Path) -> None:
    rel = big_file(weight_set)
    hub.faults[rel] = Fault(corrupt=True)
    with pytest.raises(weights.WeightsError) as err:
        weights.ensure_weights(tmp_path, weight_set=weight_set)
    message = str(err.value)
    assert message.startswith(f"{rel} arrived damaged (sha256 ")
    one_line_with_manual_command(message, weight_set, tmp_path)
    assert not (tmp_path / rel).exists()
    del hub.faults[rel]
    weights.ensure_weights(tmp_path, weight_set=weight_set)          # the next start fetches it anew
    assert (tmp_path / rel).read_bytes() == sources[rel].read_bytes()


def test_short_file_is_named(weight_set, sources, hub, tmp_path: Path) -> None:
    rel = list(weight_set.files.values())[-1]
    size = sources[rel].stat().st_size
    hub.faults[rel] = Fault(truncate_to=size // 2)      # the CDN's copy is short; its headers agree with it
    with pytest.raises(weights.WeightsError) as err:
        weights.ensure_weights(tmp_path, weight_set=weight_set)
    message = str(err.value)
    assert message.startswith(f"could not download {rel} from {weight_set.repo} (OSError: Consistency check "
                              f"failed: file should be of size {size} but has size {size // 2}")
    one_line_with_manual_command(message, weight_set, tmp_path)
    assert not (tmp_path / rel).exists() and not leftovers(tmp_path)


@pytest.mark.parametrize("status", [404, 500])
def test_server_error_is_one_line_with_file_and_status(weight_set, hub, tmp_path: Path, status: int) -> None:
    rel = list(weight_set.files.values())[2]
    hub.faults[rel] = Fault(status=status)
    t0 = time.monotonic()
    with pytest.raises(weights.WeightsError) as err:
        weights.ensure_weights(tmp_path, weight_set=weight_set)
    elapsed = time.monotonic() - t0
    phrase = {404: "Not Found", 500: "Internal Server Error"}[status]
    message = str(err.value)
    assert message.startswith(f"could not download {rel} from {weight_set.repo} "
                              f"(the server answered HTTP {status} ({phrase}))")
    one_line_with_manual_command(message, weight_set, tmp_path)
    assert len(hub.log(rel, server="hub", method="HEAD")) == 1      # asked once, not retried for half a minute
    assert elapsed < 10
    assert not (tmp_path / rel).exists()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("endpoint, reason", [
    (f"http://127.0.0.1:{closed_port()}", "127.0.0.1 is unreachable (Connection refused)"),
    ("http://avatarcam-weights.invalid", "avatarcam-weights.invalid is unreachable ("),
], ids=["nothing-listening", "unresolvable-host"])
def test_offline_is_one_line_within_seconds(weight_set, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            endpoint: str, reason: str) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    t0 = time.monotonic()
    with pytest.raises(weights.WeightsError) as err:
        weights.ensure_weights(tmp_path, weight_set=weight_set)
    assert time.monotonic() - t0 < 10
    message = str(err.value)
    assert message.startswith(f"cannot download the {weight_set.title} weights: {reason}")
    one_line_with_manual_command(message, weight_set, tmp_path)
