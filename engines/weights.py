"""Where the LivePortrait checkpoints live, and fetching them when they are missing.

Resolution order: an explicit directory (``--weights DIR``), then ``$AVATARCAM_WEIGHTS``, then a
per-user cache directory. The layout inside is the Hugging Face repository's own, so a directory
made with ``hf download`` works as is::

    DIR/liveportrait/base_models/appearance_feature_extractor.pth
    DIR/liveportrait/base_models/motion_extractor.pth
    DIR/liveportrait/base_models/warping_module.pth
    DIR/liveportrait/base_models/spade_generator.pth
    DIR/liveportrait/retargeting_models/stitching_retargeting_module.pth
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger(__name__)

APP_NAME = "avatarcam"
WEIGHTS_ENV = "AVATARCAM_WEIGHTS"
HF_REPO = "KwaiVGI/LivePortrait"

# checkpoint name -> path inside the weights directory (= path inside the Hugging Face repo)
CHECKPOINT_FILES: dict[str, str] = {
    "appearance_feature_extractor": "liveportrait/base_models/appearance_feature_extractor.pth",
    "motion_extractor": "liveportrait/base_models/motion_extractor.pth",
    "warping_module": "liveportrait/base_models/warping_module.pth",
    "spade_generator": "liveportrait/base_models/spade_generator.pth",
    "stitching_retargeting_module": "liveportrait/retargeting_models/stitching_retargeting_module.pth",
}


class WeightsError(RuntimeError):
    """The weights are missing and could not be fetched; the message says what to do."""


def default_weights_dir() -> Path:
    """Per-user cache directory for the checkpoints (XDG on Linux, LOCALAPPDATA on Windows,
    Library/Caches on macOS)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / APP_NAME / "weights"


def resolve_weights_dir(explicit: str | os.PathLike | None = None) -> Path:
    """``explicit`` if given, else ``$AVATARCAM_WEIGHTS``, else ``default_weights_dir()``."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env).expanduser()
    return default_weights_dir()


def checkpoint_path(weights_dir: Path, name: str) -> Path:
    try:
        return Path(weights_dir) / CHECKPOINT_FILES[name]
    except KeyError:
        raise ValueError(f"unknown checkpoint {name!r}; expected one of {', '.join(CHECKPOINT_FILES)}") from None


def missing_checkpoints(weights_dir: Path) -> list[str]:
    """Repository paths of the checkpoint files not present in ``weights_dir``."""
    return [rel for rel in CHECKPOINT_FILES.values() if not (Path(weights_dir) / rel).is_file()]


def _hash_file(h: hashlib._Hash, path: str | os.PathLike) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 4 MB pieces."""
    h = hashlib.sha256()
    _hash_file(h, path)
    return h.hexdigest()


def weights_fingerprint(weights_dir: str | os.PathLike) -> str:
    """sha256 over the five checkpoint files (their paths in the official layout, then their
    bytes): identifies the weights that exported graphs and engines were made from."""
    h = hashlib.sha256()
    for rel in CHECKPOINT_FILES.values():
        h.update(rel.encode() + b"\0")
        _hash_file(h, Path(weights_dir) / rel)
    return h.hexdigest()


def manual_download_hint(weights_dir: Path) -> str:
    files = " ".join(CHECKPOINT_FILES.values())
    return (f"download them by hand with: hf download {HF_REPO} {files} --local-dir {weights_dir} "
            f"(expected layout: {weights_dir}/liveportrait/base_models/*.pth and "
            f"{weights_dir}/liveportrait/retargeting_models/stitching_retargeting_module.pth)")


def hub_unreachable_reason(timeout: float = 5.0) -> str | None:
    """Why the Hugging Face endpoint cannot be reached (None if a TCP connection opens, or if a
    proxy is configured and the check would not be meaningful). Checked up front so an offline
    machine fails in seconds instead of after the hub client's retries."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    from huggingface_hub import constants  # slow to import, needed only to download

    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return f"{host} is unreachable ({e.strerror or type(e).__name__})"
    return None


def _hf_download(repo_id: str, filename: str, local_dir: str) -> str:
    from huggingface_hub import hf_hub_download  # slow to import, needed only to download

    # hf_hub_download writes to an *.incomplete file, resumes it on the next try, and renames it
    # into place only when complete: a killed download never leaves a file at the final path.
    return hf_hub_download(repo_id=repo_id, filename=filename, local_dir=local_dir)


def ensure_weights(weights_dir: Path, *, download: bool = True,
                   downloader: Callable[[str, str, str], str] = _hf_download,
                   connectivity_check: Callable[[], str | None] = hub_unreachable_reason) -> Path:
    """Make sure all five checkpoint files are in ``weights_dir``; fetch the missing ones from the
    Hugging Face repository when ``download`` is true. Raises ``WeightsError`` with a one-line
    message (naming the manual command) when files are missing and cannot be fetched."""
    weights_dir = Path(weights_dir)
    missing = missing_checkpoints(weights_dir)
    if not missing:
        return weights_dir
    if not download:
        raise WeightsError(f"{len(missing)} LivePortrait checkpoint(s) missing in {weights_dir} "
                           f"({', '.join(missing)}); {manual_download_hint(weights_dir)}")
    offline = connectivity_check()
    if offline:
        raise WeightsError(f"cannot download the LivePortrait weights: {offline}; {manual_download_hint(weights_dir)}")
    log.info("downloading %d LivePortrait checkpoint(s) from %s into %s", len(missing), HF_REPO, weights_dir)
    # The hub client logs every retry; the one message that matters is ours.
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    for rel in missing:
        try:
            weights_dir.mkdir(parents=True, exist_ok=True)
            downloader(HF_REPO, rel, str(weights_dir))
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - network, auth, disk: all end in the same advice
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0][:160]
            raise WeightsError(f"could not download {rel} from {HF_REPO} ({type(e).__name__}: {reason}); "
                               f"{manual_download_hint(weights_dir)}") from None
        if not (weights_dir / rel).is_file():
            raise WeightsError(f"download of {rel} finished but the file is not in {weights_dir}; "
                               f"{manual_download_hint(weights_dir)}")
    return weights_dir
