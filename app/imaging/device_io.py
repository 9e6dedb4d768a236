"""Moving a frame's images between the host and the inference device.

Uploads (``HostToDevice``) are queued without waiting for the device; the frame's one device ->
host transfer (``fetch_image``) carries the finished image and a validity byte together.
Images on the host are H x W x 3 uint8 BGR (OpenCV's layout); on the device the renderer works
in 1 x 3 x H x W float RGB in [0, 1].
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch


def image_to_tensor(image_bgr: np.ndarray, device: torch.device,
                    upload: Callable[[np.ndarray], torch.Tensor] | None = None) -> torch.Tensor:
    """H x W x 3 uint8 BGR -> 1 x 3 x H x W float RGB in [0, 1] on ``device``; the bytes go up
    through ``upload`` when given (the live loop's non-blocking uploads), as uint8."""
    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    on_device = upload(rgb) if upload is not None else torch.from_numpy(rgb).to(device)
    return on_device.permute(2, 0, 1)[None].float().div_(255.0)


def render_to_planes(image: torch.Tensor) -> torch.Tensor:
    """1 x 3 x H x W RGB in [0, 1] -> 3 x H x W uint8 RGB planes (truncated, like the official code)."""
    return (image[0] * 255).clamp_(0, 255).to(torch.uint8)


def renders_to_planes(images: torch.Tensor) -> torch.Tensor:
    """B x 3 x H x W RGB in [0, 1] -> B x 3 x H x W uint8 RGB planes (truncated, as above)."""
    return (images * 255).clamp_(0, 255).to(torch.uint8)


def fetch_batch(planes: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[np.ndarray, bool]:
    """A batch's crops in the frame's one transfer: B x 3 x H x W uint8 RGB planes (and the
    validity flag) -> B x H x W x 3 BGR images and the flag."""
    images, ok = fetch_images(list(planes.unbind(0)), valid)
    return np.stack(images), ok


def fetch_image(planes: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[np.ndarray, bool]:
    """The frame's one device -> host transfer: 3 x H x W uint8 RGB planes (and a 0-dim bool
    validity flag, riding along as one extra byte) -> H x W x 3 BGR image and the flag."""
    images, ok = fetch_images([planes], valid)
    return images[0], ok


def fetch_images(planes: Sequence[torch.Tensor], valid: torch.Tensor | None = None) -> tuple[list[np.ndarray], bool]:
    """``fetch_image`` of several images in the same one transfer (e.g. the output region and a
    small copy of it to segment): one H x W x 3 BGR image per 3 x H x W planes, and the flag."""
    if planes[0].device.type == "cpu":
        ok = True if valid is None else bool(valid.numpy())       # no transfer on the CPU
        return [_interleave(p.numpy()) for p in planes], ok
    host = pack_frames(planes, valid).cpu().numpy()
    return unpack_frames(host, [(p.shape[1], p.shape[2]) for p in planes], valid is not None)


def _interleave(p: np.ndarray) -> np.ndarray:
    if p.size == 0:
        return np.empty(p.shape[1:] + (3,), np.uint8)
    return cv2.merge([p[2], p[1], p[0]])                          # interleave and reverse in one pass


def pack_frames(planes: Sequence[torch.Tensor], valid: torch.Tensor | None) -> torch.Tensor:
    """On the device: each image's 3 x H x W RGB planes -> interleaved BGR bytes, one image after
    the other, then the validity byte (if any): one uint8 vector."""
    parts = [p.flip(0).permute(1, 2, 0).reshape(-1) for p in planes]
    if valid is not None:
        parts.append(valid.reshape(1).to(torch.uint8))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def unpack_frames(host: np.ndarray, shapes: Sequence[tuple[int, int]],
                  has_flag: bool) -> tuple[list[np.ndarray], bool]:
    """On the host: the bytes of ``pack_frames`` and each image's (H, W) -> H x W x 3 BGR images
    (views) and the flag."""
    images, offset = [], 0
    for height, width in shapes:
        images.append(host[offset:offset + height * width * 3].reshape(height, width, 3))
        offset += height * width * 3
    return images, not has_flag or bool(host[-1])


class HostToDevice:
    """Uploads of a frame's inputs that do not wait for the GPU. A plain copy from pageable host
    memory drains the CUDA stream first; a copy from page-locked memory is queued like a kernel.
    So each named input goes through its own page-locked staging buffer, reused once the copy
    queued from it last time has finished. On a CPU device the array is used in place."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._staging: dict[str, tuple[torch.Tensor, torch.cuda.Event]] = {}

    def __call__(self, name: str, array: np.ndarray) -> torch.Tensor:
        host = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type != "cuda":
            return host.to(self.device)
        staged = self._staging.get(name)
        if staged is None or staged[0].shape != host.shape or staged[0].dtype != host.dtype:
            staged = (torch.empty(host.shape, dtype=host.dtype, pin_memory=True), torch.cuda.Event())
            self._staging[name] = staged
        buffer, done = staged
        if not done.query():       # the last copy is still in flight (normally long finished)
            done.synchronize()
        buffer.copy_(host)
        on_device = buffer.to(self.device, non_blocking=True)
        done.record()
        return on_device
