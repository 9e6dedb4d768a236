"""Avatar image loading: every common variant becomes 8-bit BGR, everything else one clear error."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from app.avatar.loading import DEFAULT_AVATAR
from app.imaging.image_io import ImageError, limit_size, load_image

AVATAR = DEFAULT_AVATAR


def test_default_avatar_loads() -> None:
    img = load_image(AVATAR)
    assert img.shape == (512, 512, 3) and img.dtype == np.uint8


def test_grayscale_becomes_three_channels(tmp_path: Path) -> None:
    gray = cv2.cvtColor(load_image(AVATAR), cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    img = load_image(tmp_path / "g.png")
    assert img.shape == (512, 512, 3) and np.array_equal(img[..., 0], gray) and np.array_equal(img[..., 2], gray)


def test_rgba_is_flattened_on_white(tmp_path: Path) -> None:
    bgra = np.zeros((64, 64, 4), np.uint8)
    bgra[..., :3] = (10, 20, 30)
    bgra[:, 32:, 3] = 255          # right half opaque, left half transparent
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    img = load_image(tmp_path / "a.png")
    assert (img[:, :32] == 255).all() and (img[:, 32:] == (10, 20, 30)).all()


def test_16_bit_png_is_scaled_to_8_bit(tmp_path: Path) -> None:
    img16 = (load_image(AVATAR).astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "deep.png"), img16)
    assert cv2.imread(str(tmp_path / "deep.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    img = load_image(tmp_path / "deep.png")
    assert img.dtype == np.uint8 and np.abs(img.astype(int) - load_image(AVATAR).astype(int)).max() <= 1


def test_exif_orientation_is_honoured(tmp_path: Path) -> None:
    rgb = cv2.cvtColor(load_image(AVATAR), cv2.COLOR_BGR2RGB)[:, :400]      # 512 tall x 400 wide
    exif = Image.Exif()
    exif[0x0112] = 6                     # "rotate 90 CW to display"
    Image.fromarray(rgb).save(tmp_path / "rot.jpg", quality=95, exif=exif)
    img = load_image(tmp_path / "rot.jpg")
    assert img.shape[:2] == (400, 512)   # displayed upright: width and height swapped
    expected = cv2.rotate(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), cv2.ROTATE_90_CLOCKWISE)
    assert np.abs(img.astype(int) - expected.astype(int)).mean() < 3


@pytest.mark.parametrize("content, match", [
    (b"", "file is empty"),
    (b"this is a text file, not a picture\n", "not an image OpenCV can read"),
])
def test_non_images_are_clear_errors(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "avatar.png"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=match) as err:
        load_image(path)
    assert "avatar.png" in str(err.value) and "\n" not in str(err.value)


def test_truncated_jpeg_and_missing_file(tmp_path: Path) -> None:
    ok, buf = cv2.imencode(".jpg", load_image(AVATAR))
    (tmp_path / "cut.jpg").write_bytes(buf.tobytes()[:200])
    with pytest.raises(ImageError, match="cut.jpg"):
        load_image(tmp_path / "cut.jpg")
    with pytest.raises(ImageError, match="file not found"):
        load_image(tmp_path / "nope.jpg")


def test_limit_size_keeps_aspect() -> None:
    img = np.zeros((3000, 1500, 3), np.uint8)
    assert limit_size(img).shape == (1920, 960, 3)
    small = np.zeros((100, 200, 3), np.uint8)
    assert limit_size(small) is small
