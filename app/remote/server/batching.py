"""Rendering several sessions' frames as one batch: W+G is nearly all of a frame's work, and a GPU
runs one batch of N frames in well under N times one frame's time.

``BatchedBackend`` is the backend each session's ``Animator`` sees: everything goes to the shared
backend, except ``render``, which hands its frame to a batching function (on the render server,
Ray Serve's ``serve.batch``) and waits for its own share of the result, and ``close``, which leaves
the shared backend to the replica. A replica with several weight sets has one ``BatchedBackend``
per set and renders a collected batch per set (``render_by_set``). A session's frame is one request
of B rows: B = 1, or a group photo's faces (all of them in the batch, and back to that session)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import torch

from engines.backend import InferenceBackend
from engines.motion import KeypointInfo

# feature, x_s, x_d of one session's frame: batch B each (1, or a group photo's B faces)
RenderRequest = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
K = TypeVar("K", bound=str)                                         # a weight set's name (an avatar kind)


def render_batch(backend: InferenceBackend, requests: Sequence[RenderRequest]) -> list[torch.Tensor]:
    """W+G of several frames in one call: the requests' tensors are stacked along the batch axis
    and the rendered B x 3 x H x W images handed back in the requests' order, each request its own
    B rows (a group photo's session gets its B faces back, in its order)."""
    if len(requests) == 1:
        return [backend.render(*requests[0])]
    rows = [int(request[0].shape[0]) for request in requests]
    with torch.inference_mode():
        feature, x_s, x_d = (torch.cat(parts) for parts in zip(*requests, strict=True))
        return list(backend.render(feature, x_s, x_d).split(rows))


def render_by_set(backend_of: Callable[[K], InferenceBackend],
                  requests: Sequence[tuple[K, RenderRequest]]) -> list[torch.Tensor]:
    """W+G of frames of several weight sets (``(set, request)`` pairs): one batch per set, on
    ``backend_of(set)``, never a batch that mixes sets (their W and G differ); the images come
    back in the requests' order."""
    images: list[torch.Tensor | None] = [None] * len(requests)
    for weight_set, indices in group_by_set(requests).items():
        rendered = render_batch(backend_of(weight_set), [requests[i][1] for i in indices])
        for i, image in zip(indices, rendered, strict=True):
            images[i] = image
    return [image for image in images if image is not None]


def group_by_set(requests: Sequence[tuple[K, RenderRequest]]) -> dict[K, list[int]]:
    """The requests' indices by weight set, in the order each set first comes."""
    groups: dict[K, list[int]] = {}
    for i, (weight_set, _) in enumerate(requests):
        groups.setdefault(weight_set, []).append(i)
    return groups


class BatchedBackend:
    """``backend`` with ``render`` replaced by ``render_one`` (which batches across sessions); the
    other members are the shared backend's, delegated one by one (an ``InferenceBackend``), and
    ``close`` closes nothing."""

    def __init__(self, backend: InferenceBackend, render_one: Callable[[RenderRequest], torch.Tensor]) -> None:
        self._backend = backend
        self._render_one = render_one

    @property
    def name(self) -> str:
        return self._backend.name

    @property
    def device(self) -> torch.device:
        return self._backend.device

    def appearance(self, image: torch.Tensor) -> torch.Tensor:
        return self._backend.appearance(image)

    def motion(self, image: torch.Tensor) -> KeypointInfo:
        return self._backend.motion(image)

    def render(self, feature: torch.Tensor, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
        return self._render_one((feature, x_s, x_d))

    def stitching(self, x: torch.Tensor, /) -> torch.Tensor:
        return self._backend.stitching(x)

    def eye(self, x: torch.Tensor, /) -> torch.Tensor:
        return self._backend.eye(x)

    def lip(self, x: torch.Tensor, /) -> torch.Tensor:
        return self._backend.lip(x)

    def close(self) -> None:
        """Closes nothing: the shared backend is the replica's, which closes it at its shutdown
        (the sessions that use this come and go before that)."""


if TYPE_CHECKING:
    # the type checker holds it to the interface that sessions' Animators take it for
    _BATCHED: type[InferenceBackend] = BatchedBackend
