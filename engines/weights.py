"""Where the LivePortrait checkpoints live, and fetching them when they are missing.

Resolution order: an explicit directory (``--weights DIR``), then ``$AVATARCAM_WEIGHTS``, then a
per-user cache directory. The layout inside is the Hugging Face repository's own, so a directory
made with ``hf download`` works as is::

    DIR/liveportrait/base_models/appearance_feature_extractor.pth
    DIR/liveportrait/base_models/motion_extractor.pth
    DIR/liveportrait/base_models/warping_module.pth
    DIR/liveportrait/base_models/spade_generator.pth
    DIR/liveportrait/retargeting_models/stitching_retargeting_module.pth

That is the human weight set (``LIVEPORTRAIT``). The animal set (``LIVEPORTRAIT_ANIMALS``) lives in
the same directory and repository, under ``DIR/liveportrait_animals/base_models_v1.1/`` (F, M, W, G
with the same file names), and shares the human stitching file. ``WEIGHT_SETS`` names the sets
(``human``, ``animal``); functions that take a set accept the ``WeightSet`` or its name.

Missing files are fetched one by one with ``huggingface_hub.hf_hub_download`` (honouring
``HF_ENDPOINT``): it writes each into a temporary file and moves it into place only when complete, so
a final path never holds half a file. Each file arrives checked against the hub's own record (size,
and sha256 for LFS files), and a damaged one is deleted and named. Every failure is one
``WeightsError`` line ending with the manual ``hf download`` command. ``progress`` receives
``(repository path, bytes so far, total bytes)`` on the downloading thread.
"""
from __future__ import annotations

import hashlib
import inspect
import logging
import os
import re
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
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




@dataclass(frozen=True)
class WeightSet:
    """Checkpoint files of one Hugging Face repository, kept in the repository's own layout."""

    title: str                       # in messages: "LivePortrait checkpoint(s) missing"
    repo: str
    files: Mapping[str, str]         # checkpoint name -> path in the repository = path in the weights dir


LIVEPORTRAIT = WeightSet("LivePortrait", HF_REPO, CHECKPOINT_FILES)

# The animal F, M, W, G (v1.1, the official default) have the human networks' architectures and
# state-dict layouts; the official animal pipeline uses the human stitching and retargeting file.
ANIMAL_BASE_DIR = "liveportrait_animals/base_models_v1.1"
ANIMAL_CHECKPOINT_FILES: dict[str, str] = {
    **{name: f"{ANIMAL_BASE_DIR}/{Path(rel).name}" for name, rel in CHECKPOINT_FILES.items()
       if name != "stitching_retargeting_module"},
    "stitching_retargeting_module": CHECKPOINT_FILES["stitching_retargeting_module"],
}
LIVEPORTRAIT_ANIMALS = WeightSet("LivePortrait animal", HF_REPO, ANIMAL_CHECKPOINT_FILES)

# avatar kind -> the weights its networks load
WEIGHT_SETS: dict[str, WeightSet] = {"human": LIVEPORTRAIT, "animal": LIVEPORTRAIT_ANIMALS}

# (repository path, bytes so far, total bytes); called on the downloading thread
DownloadProgress = Callable[[str, int, int], None]
Downloader = Callable[[str, str, str, "DownloadProgress | None"], str]


class WeightsError(RuntimeError):
    """The weights are missing and could not be fetched; the message says what to do."""


class DamagedDownload(RuntimeError):
    """A downloaded file differs from the hub's record of it (and has been deleted)."""


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


def weight_set_named(name: str) -> WeightSet:
    """The weight set of ``WEIGHT_SETS`` called ``name``; a ``ValueError`` naming the choices otherwise."""
    try:
        return WEIGHT_SETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown weight set {name!r}; expected one of {', '.join(WEIGHT_SETS)}") from None


def weight_set_name(weight_set: WeightSet) -> str:
    """The key of ``weight_set`` in ``WEIGHT_SETS`` (what the command line and manifests call it)."""
    for name, candidate in WEIGHT_SETS.items():
        if candidate == weight_set:
            return name
    raise ValueError(f"weight set {weight_set.title!r} is not one of WEIGHT_SETS ({', '.join(WEIGHT_SETS)})")


def as_weight_set(weight_set: WeightSet | str) -> WeightSet:
    """A ``WeightSet`` given as itself or by its name in ``WEIGHT_SETS``."""
    return weight_set if isinstance(weight_set, WeightSet) else weight_set_named(weight_set)


def checkpoint_path(weights_dir: Path, name: str, weight_set: WeightSet | str = LIVEPORTRAIT) -> Path:
    """Where checkpoint ``name`` (a key of ``CHECKPOINT_FILES``) of ``weight_set`` lies in ``weights_dir``."""
    files = as_weight_set(weight_set).files
    try:
        return Path(weights_dir) / files[name]
    except KeyError:
        raise ValueError(f"unknown checkpoint {name!r}; expected one of {', '.join(files)}") from None


def missing_checkpoints(weights_dir: Path, weight_set: WeightSet | str = LIVEPORTRAIT) -> list[str]:
    """Repository paths of the checkpoint files of ``weight_set`` not present in ``weights_dir``."""
    return [rel for rel in as_weight_set(weight_set).files.values() if not (Path(weights_dir) / rel).is_file()]


def _hash_file(h: hashlib._Hash, path: str | os.PathLike) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 4 MB pieces."""
    h = hashlib.sha256()
    _hash_file(h, path)
    return h.hexdigest()


def weights_fingerprint(weights_dir: str | os.PathLike, weight_set: WeightSet | str = LIVEPORTRAIT) -> str:
    """sha256 over the five checkpoint files of ``weight_set`` (their paths in the official layout,
    then their bytes): identifies the weights that exported graphs and engines were made from. The
    paths are hashed too, so two sets never share a fingerprint, even on identical bytes."""
    h = hashlib.sha256()
    for rel in as_weight_set(weight_set).files.values():
        h.update(rel.encode() + b"\0")
        _hash_file(h, Path(weights_dir) / rel)
    return h.hexdigest()


def manual_download_hint(weights_dir: Path, weight_set: WeightSet = LIVEPORTRAIT) -> str:
    files = " ".join(weight_set.files.values())
    folders: dict[str, list[str]] = {}
    for rel in weight_set.files.values():
        folders.setdefault(rel.rsplit("/", 1)[0], []).append(rel)
    layout = " and ".join(f"{weights_dir}/{folder}/*{Path(rels[0]).suffix}" if len(rels) > 1
                          else f"{weights_dir}/{rels[0]}" for folder, rels in folders.items())
    return (f"download them by hand with: hf download {weight_set.repo} {files} --local-dir {weights_dir} "
            f"(expected layout: {layout})")


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


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _progress_bar_class(rel: str, progress: DownloadProgress) -> type:
    """The hub's own console bar (shown on a terminal as before) that also reports to ``progress``."""
    from huggingface_hub.utils import tqdm as hub_tqdm

    class ReportingBar(hub_tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # counted here: a bar that is not drawn (no terminal) does not count in tqdm
            self.done, self.size = int(kwargs.get("initial") or 0), int(kwargs.get("total") or 0)
            progress(rel, self.done, self.size)

        def update(self, n: float | None = 1) -> bool | None:
            self.done += int(n or 0)
            progress(rel, self.done, self.size)
            return super().update(n)

    return ReportingBar


def _check_download(path: Path, rel: str, size: int | None, etag: str | None) -> None:
    """Raises ``DamagedDownload`` (after deleting the file) when it is not the file the hub announced:
    its size (``X-Linked-Size``) or, for an LFS file, its sha256 (the ETag). The hub client checks
    neither when the server's byte count agrees with itself."""
    actual = path.stat().st_size
    problem = None
    if size is not None and actual != size:
        problem = f"{actual} bytes instead of {size}"
    elif etag and _SHA256.fullmatch(etag) and (digest := file_sha256(path)) != etag:
        problem = f"sha256 {digest[:12]}… instead of {etag[:12]}…"
    if problem:
        path.unlink(missing_ok=True)
        raise DamagedDownload(f"{rel} arrived damaged ({problem}) and was deleted")


def _hf_download(repo_id: str, filename: str, local_dir: str, progress: DownloadProgress | None = None) -> str:
    """One file through the hub client, checked against the hub's record of it."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url  # slow to import

    # Our own HEAD first, without the client's retries: a 404 or 500 is one prompt line with its
    # status (the client would retry a 500 for ~25 s, then report "cannot find the requested files").
    meta = get_hf_file_metadata(hf_hub_url(repo_id, filename))
    if meta.size:
        log.info("downloading %s (%.*f MB)", filename, 1 if meta.size < 10e6 else 0, meta.size / 1e6)
    options: dict[str, Any] = {}
    if progress is not None and "tqdm_class" in inspect.signature(hf_hub_download).parameters:
        options["tqdm_class"] = _progress_bar_class(filename, progress)
    # hf_hub_download writes to a temporary file and renames it into place only when complete. A
    # connection dropped mid-file is resumed from the last 10 MB boundary within the call (Range);
    # a download stopped otherwise (quit, crash, error) starts that file over on the next run.
    path = hf_hub_download(repo_id=repo_id, filename=filename, local_dir=local_dir, **options)
    _check_download(Path(path), filename, meta.size, meta.etag)
    return path


def _http_status(error: BaseException) -> int | None:
    """The HTTP status behind an error of the hub client, if the server answered one."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        e = pending.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        status = getattr(getattr(e, "response", None), "status_code", None)
        if isinstance(status, int) and status >= 400:
            return status
        pending += [e.__cause__, e.__context__]
    return None


def _failure(error: Exception) -> str:
    status = _http_status(error)
    if status is not None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "error"
        return f"the server answered HTTP {status} ({phrase})"
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0].split(". ")[0][:160]
    return f"{type(error).__name__}: {reason}"


def ensure_weights(weights_dir: Path, *, download: bool = True, downloader: Downloader = _hf_download,
                   connectivity_check: Callable[[], str | None] = hub_unreachable_reason,
                   progress: DownloadProgress | None = None, weight_set: WeightSet = LIVEPORTRAIT) -> Path:
    """Make sure all checkpoint files of ``weight_set`` are in ``weights_dir``; fetch the missing ones
    from its Hugging Face repository when ``download`` is true, reporting to ``progress``. Raises
    ``WeightsError`` with a one-line message (naming the manual command) when files are missing and
    cannot be fetched, or arrive damaged."""
    weights_dir = Path(weights_dir)
    missing = missing_checkpoints(weights_dir, weight_set)
    if not missing:
        return weights_dir
    hint = manual_download_hint(weights_dir, weight_set)
    if not download:
        raise WeightsError(f"{len(missing)} {weight_set.title} checkpoint(s) missing in {weights_dir} "
                           f"({', '.join(missing)}); {hint}")
    offline = connectivity_check()
    if offline:
        raise WeightsError(f"cannot download the {weight_set.title} weights: {offline}; {hint}")
    log.info("downloading %d %s checkpoint(s) from %s into %s", len(missing), weight_set.title, weight_set.repo,
             weights_dir)
    # The hub client logs every retry, its HTTP library every request (at INFO, our console's level);
    # the one message that matters is ours.
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    for http_library in ("httpx", "httpx2"):
        logging.getLogger(http_library).setLevel(logging.WARNING)
    for rel in missing:
        try:
            weights_dir.mkdir(parents=True, exist_ok=True)
            downloader(weight_set.repo, rel, str(weights_dir), progress)
        except KeyboardInterrupt:
            raise
        except DamagedDownload as e:
            raise WeightsError(f"{e}: start again to download it anew, or {hint}") from None
        except Exception as e:  # noqa: BLE001 - network, auth, disk: all end in the same advice
            raise WeightsError(f"could not download {rel} from {weight_set.repo} ({_failure(e)}); {hint}") from None
        if not (weights_dir / rel).is_file():
            raise WeightsError(f"download of {rel} finished but the file is not in {weights_dir}; {hint}")
    return weights_dir
