"""Shared test fixtures. The parity kit lives outside the repository (../shared/parity, or
$LIVEPORTRAIT_PARITY_DIR): tests that need it skip on a user's fresh clone, but fail in CI
(CI=true), where the kit is always present."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from support import REPO_ROOT

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def parity_kit_dir() -> Path:
    return Path(os.environ.get("LIVEPORTRAIT_PARITY_DIR", REPO_ROOT.parent / "shared" / "parity")).resolve()


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    path = parity_kit_dir()
    if not (path / "check_parity.py").is_file():
        msg = (f"LivePortrait parity kit not found at {path} "
               "(set LIVEPORTRAIT_PARITY_DIR to its folder)")
        if os.environ.get("CI"):
            pytest.fail(msg + "; CI must run the parity checks")
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def manifest(parity_dir: Path) -> dict:
    """The kit's manifest: every official state-dict key, shape and dtype."""
    import json

    return json.loads((parity_dir / "manifest.json").read_text())


@pytest.fixture(scope="session")
def synthetic_weights_dir(parity_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fake checkpoint files in the official layout, written by the kit (~520 MB, once per run)."""
    import subprocess

    out = tmp_path_factory.mktemp("synthetic_weights")
    subprocess.run([sys.executable, str(parity_dir / "weights.py"), "--write-pth", str(out)],
                   check=True, capture_output=True, timeout=600)
    return out


@pytest.fixture(scope="session")
def synthetic_animal_weights_dir(synthetic_weights_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The animal weight set's layout (``liveportrait_animals/base_models_v1.1/{F,M,W,G}.pth`` and the
    human stitching file) holding the kit's synthetic human files, hard-linked (copied where links
    fail): the networks' architectures and layouts are the same, so only the paths differ. The human
    layout is absent, so a test cannot pass by reading the human files."""
    import os
    import shutil

    from engines.weights import LIVEPORTRAIT, LIVEPORTRAIT_ANIMALS

    out = tmp_path_factory.mktemp("synthetic_animal_weights")
    for name, rel in LIVEPORTRAIT_ANIMALS.files.items():
        source, target = synthetic_weights_dir / LIVEPORTRAIT.files[name], out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
    return out


@pytest.fixture(scope="session")
def synthetic_weights_both_sets(synthetic_weights_dir: Path, synthetic_animal_weights_dir: Path,
                                tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One weights folder holding both sets in the official layouts (the kit's synthetic human
    files and the animal layout made of them, linked), as a user's folder does after both
    downloads."""
    out = tmp_path_factory.mktemp("synthetic_both_sets")
    for folder in (synthetic_weights_dir, synthetic_animal_weights_dir):
        for source in folder.rglob("*.pth"):
            target = out / source.relative_to(folder)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(source.resolve())
    return out


@pytest.fixture(scope="session")
def exported_onnx(synthetic_weights_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """All ONNX graphs (fp32 and fp16) of the synthetic weights, exported and verified once per run
    (about a minute on 2 cores); shared by the ONNX and TensorRT tests."""
    from export.onnx_export import export_onnx

    return export_onnx(synthetic_weights_dir, tmp_path_factory.mktemp("onnx"), fp16=True)


@pytest.fixture(scope="session")
def examples(parity_dir: Path) -> Path:
    """The kit's example portraits (s0-s2.jpg) and driving video (d0.mp4)."""
    return parity_dir / "data" / "examples"


@pytest.fixture(scope="session")
def d0(examples: Path) -> Path:
    return examples / "d0.mp4"


@pytest.fixture(scope="session")
def avatar_face():
    """Our default avatar, tracked and cropped once per run."""
    from app.avatar.face import prepare_avatar_face
    from app.avatar.loading import DEFAULT_AVATAR
    from app.face.tracker import MediaPipeFaceMesh

    mesh = MediaPipeFaceMesh()
    try:
        return prepare_avatar_face(DEFAULT_AVATAR, mesh)
    finally:
        mesh.close()


TIERS = ("unit", "integration", "gpu")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test belongs to exactly one tier: ``integration`` or ``gpu`` when marked so (by the
    test, its class or its module's ``pytestmark``), else ``unit``."""
    for item in items:
        tiers = {m.name for m in item.iter_markers() if m.name in TIERS}
        if len(tiers) > 1:
            raise pytest.UsageError(f"{item.nodeid}: marked with several tiers {sorted(tiers)}")
        if not tiers:
            item.add_marker(pytest.mark.unit)
