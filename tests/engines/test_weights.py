"""Weights directory resolution, download and loading errors (no network needed)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engines import checkpoints, weights
from engines.models import build


def test_resolution_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path / "env"))
    assert weights.resolve_weights_dir(tmp_path / "cli") == tmp_path / "cli"
    assert weights.resolve_weights_dir(None) == tmp_path / "env"
    monkeypatch.delenv(weights.WEIGHTS_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(weights.sys, "platform", "linux")
    assert weights.resolve_weights_dir(None) == tmp_path / "xdg" / "avatarcam" / "weights"


def test_downloads_only_missing_human_model_files(tmp_path: Path) -> None:
    present = tmp_path / weights.CHECKPOINT_FILES["motion_extractor"]
    present.parent.mkdir(parents=True)
    present.write_bytes(b"x")
    fetched = []

    def fake_download(repo: str, filename: str, local_dir: str, progress: object) -> str:
        fetched.append((repo, filename))
        dest = Path(local_dir) / filename
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(b"x")
        return str(dest)

    weights.ensure_weights(tmp_path, downloader=fake_download, connectivity_check=lambda: None)
    files = weights.CHECKPOINT_FILES
    assert {f for _, f in fetched} == set(files.values()) - {files["motion_extractor"]}
    assert {r for r, _ in fetched} == {"KwaiVGI/LivePortrait"}
    assert not weights.missing_checkpoints(tmp_path)
    fetched.clear()
    weights.ensure_weights(tmp_path, downloader=fake_download, connectivity_check=lambda: None)
    assert fetched == []  # idempotent


def test_offline_gives_one_line_with_manual_command(tmp_path: Path) -> None:
    with pytest.raises(weights.WeightsError) as err:
        weights.ensure_weights(tmp_path, connectivity_check=lambda: "huggingface.co is unreachable (test)")
    msg = str(err.value)
    assert "\n" not in msg
    assert "hf download KwaiVGI/LivePortrait" in msg and str(tmp_path) in msg
    assert "liveportrait/retargeting_models/stitching_retargeting_module.pth" in msg


def test_failed_download_is_reported_not_raised_raw(tmp_path: Path) -> None:
    def broken(repo: str, filename: str, local_dir: str, progress: object) -> str:
        raise ConnectionError("connection reset by peer.\nlong traceback text")

    with pytest.raises(weights.WeightsError, match=r"could not download .*ConnectionError: connection reset by peer"):
        weights.ensure_weights(tmp_path, downloader=broken, connectivity_check=lambda: None)
    with pytest.raises(weights.WeightsError, match="missing"):
        weights.ensure_weights(tmp_path, download=False)


def _save_mlps(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    ckpt = {entry: {prefix + k: v for k, v in build(entry).state_dict().items()}
            for entry in ("retarget_shoulder", "retarget_mouth", "retarget_eye")}
    ckpt["unused_extra_entry"] = {"anything": torch.zeros(1)}
    torch.save(ckpt, path)
    return ckpt


@pytest.mark.parametrize("prefix", ["module.", ""])
def test_stitching_file_loads_with_and_without_ddp_prefix(tmp_path: Path, prefix: str) -> None:
    path = tmp_path / "stitching_retargeting_module.pth"
    ckpt = _save_mlps(path, prefix)
    nets = checkpoints.load_stitching_file(path)
    assert set(nets) == {"stitching", "lip", "eye"}
    assert torch.equal(nets["eye"].state_dict()["mlp.0.weight"], ckpt["retarget_eye"][prefix + "mlp.0.weight"])


def test_truncated_checkpoint_is_a_clear_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "appearance_feature_extractor.pth"
    torch.save(build("appearance_feature_extractor").state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(checkpoints.CheckpointError, match=r"appearance_feature_extractor\.pth: not a readable"):
        checkpoints.load_base_network("appearance_feature_extractor", path)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(checkpoints.CheckpointError, match="appearance_feature_extractor.pth"):
        checkpoints.load_liveportrait_file(path)


def test_wrong_layout_is_rejected_before_anything_is_copied(tmp_path: Path) -> None:
    path = tmp_path / "stitching_retargeting_module.pth"
    ckpt = _save_mlps(path, "module.")
    ckpt["retarget_mouth"]["module.mlp.0.weight"] = torch.zeros(3, 3)
    del ckpt["retarget_eye"]["module.mlp.2.bias"]
    torch.save(ckpt, path)
    with pytest.raises(checkpoints.CheckpointError, match=r"\[retarget_mouth\].*wrong shapes mlp\.0\.weight"):
        checkpoints.load_stitching_file(path)
    target = build("retarget_mouth")
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(checkpoints.CheckpointError):
        checkpoints._load_into(target, {k[7:]: v for k, v in ckpt["retarget_mouth"].items()}, "test")
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # untouched


def test_spade_checkpoint_with_new_style_spectral_norm_keys_loads(tmp_path: Path) -> None:
    from torch.nn.utils.parametrizations import spectral_norm

    legacy = build("spade_generator").state_dict()
    conv = torch.nn.Conv2d(4, 4, 3)
    spectral_norm(conv)
    new_suffixes = [k for k in conv.state_dict() if "parametrizations" in k]
    assert new_suffixes  # the spelling we remap really is what torch writes
    renamed = {}
    for k, v in legacy.items():
        k = k.replace(".weight_orig", ".parametrizations.weight.original")
        k = k.replace(".weight_u", ".parametrizations.weight.0._u")
        k = k.replace(".weight_v", ".parametrizations.weight.0._v")
        renamed[k] = v
    path = tmp_path / "spade_generator.pth"
    torch.save(renamed, path)
    net = checkpoints.load_base_network("spade_generator", path)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in legacy.items())


# --------------------------------------------------------------------------- weight sets
ANIMAL_FILES = [f"liveportrait_animals/base_models_v1.1/{n}.pth" for n in
                ("appearance_feature_extractor", "motion_extractor", "warping_module", "spade_generator")]
STITCHING_FILE = "liveportrait/retargeting_models/stitching_retargeting_module.pth"


def test_weight_sets_by_name_and_their_paths(tmp_path: Path) -> None:
    assert weights.weight_set_named("animal") is weights.LIVEPORTRAIT_ANIMALS
    assert weights.weight_set_name(weights.LIVEPORTRAIT) == "human"
    with pytest.raises(ValueError, match=r"^unknown weight set 'cat'; expected one of human, animal$"):
        weights.weight_set_named("cat")
    assert weights.checkpoint_path(tmp_path, "warping_module", "animal") == tmp_path / ANIMAL_FILES[2]
    assert weights.checkpoint_path(tmp_path, "stitching_retargeting_module", weights.LIVEPORTRAIT_ANIMALS) == \
        tmp_path / STITCHING_FILE
    assert weights.checkpoint_path(tmp_path, "warping_module") == \
        tmp_path / "liveportrait/base_models/warping_module.pth"
    with pytest.raises(ValueError, match="unknown checkpoint 'eyes'"):
        weights.checkpoint_path(tmp_path, "eyes", "animal")


def _write_set(root: Path, weight_set: weights.WeightSet) -> None:
    for name, rel in weight_set.files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(name.encode())          # the same bytes in both sets


def test_fingerprint_covers_the_sets_files_and_tells_the_sets_apart(tmp_path: Path) -> None:
    _write_set(tmp_path, weights.LIVEPORTRAIT)
    _write_set(tmp_path, weights.LIVEPORTRAIT_ANIMALS)
    human, animal = weights.weights_fingerprint(tmp_path), weights.weights_fingerprint(tmp_path, "animal")
    assert human == weights.weights_fingerprint(tmp_path, weights.LIVEPORTRAIT) and human != animal
    (tmp_path / ANIMAL_FILES[1]).write_bytes(b"other animal M")
    assert weights.weights_fingerprint(tmp_path, "animal") != animal
    assert weights.weights_fingerprint(tmp_path) == human            # the human set does not read it


def test_missing_animal_files_are_one_line_naming_the_hf_download_of_the_animal_files(tmp_path: Path) -> None:
    from engines import registry

    _write_set(tmp_path, weights.LIVEPORTRAIT)           # the human set alone: the stitching file is shared
    with pytest.raises(weights.WeightsError) as err:
        registry.make_backend("torch", weights=tmp_path, device="cpu", download=False, weight_set="animal")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"4 LivePortrait animal checkpoint(s) missing in {tmp_path} ({', '.join(ANIMAL_FILES)})")
    assert (f"hf download KwaiVGI/LivePortrait {' '.join(ANIMAL_FILES)} {STITCHING_FILE} --local-dir {tmp_path} "
            f"(expected layout: {tmp_path}/liveportrait_animals/base_models_v1.1/*.pth and "
            f"{tmp_path}/{STITCHING_FILE})") in message


def test_animal_files_are_downloaded_like_the_human_ones(tmp_path: Path) -> None:
    fetched = []

    def fake_download(repo: str, filename: str, local_dir: str, progress: object) -> str:
        fetched.append((repo, filename))
        (Path(local_dir) / filename).parent.mkdir(parents=True, exist_ok=True)
        (Path(local_dir) / filename).write_bytes(b"x")
        return str(Path(local_dir) / filename)

    _write_set(tmp_path, weights.LIVEPORTRAIT)
    weights.ensure_weights(tmp_path, downloader=fake_download, connectivity_check=lambda: None,
                           weight_set=weights.LIVEPORTRAIT_ANIMALS)
    assert fetched == [("KwaiVGI/LivePortrait", rel) for rel in ANIMAL_FILES]     # the stitching file is there
    assert not weights.missing_checkpoints(tmp_path, "animal")
