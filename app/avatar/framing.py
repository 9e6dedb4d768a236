"""What frames an avatar for the networks: its kind (which weight set animates it) and its face
box (the square region of the image that becomes the 512 crop)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

AvatarKind = Literal["human", "animal"]
MAX_GROUP_FACES = 4             # the most faces of one avatar image animated together
AVATAR_KINDS: tuple[AvatarKind, ...] = get_args(AvatarKind)


def check_avatar_kind(kind: str) -> AvatarKind:
    """``kind`` if it is one of ``AVATAR_KINDS``, else ``ValueError`` naming them."""
    for known in AVATAR_KINDS:
        if kind == known:
            return known
    raise ValueError(f"avatar kind: expected one of {', '.join(AVATAR_KINDS)}, got {kind!r}")


@dataclass(frozen=True)
class AvatarBox:
    """A square, upright region of the avatar image in its pixels: top-left corner (``x``, ``y``;
    either may be negative) and ``size`` (the side). It becomes the 512 x 512 crop the networks
    see; the parts outside the image are padded, never squashed. Written ``X,Y,SIZE``."""

    x: float
    y: float
    size: float

    def __post_init__(self) -> None:
        if not all(math.isfinite(v) for v in (self.x, self.y, self.size)):
            raise ValueError(f"avatar box: expected finite numbers, got {self.x},{self.y},{self.size}")
        if self.size < 16:
            raise ValueError(f"avatar box: expected a side of at least 16 pixels, got {self.size:g}")

    @classmethod
    def parse(cls, text: str) -> AvatarBox:
        """``"X,Y,SIZE"`` -> box; ``ValueError`` naming the problem otherwise."""
        parts = str(text).replace(" ", "").split(",")
        try:
            x, y, size = (float(p) for p in parts)
        except ValueError:
            raise ValueError(f"avatar box: expected X,Y,SIZE (top-left corner and side in avatar pixels), "
                             f"got {text!r}") from None
        return cls(x, y, size)

    def __str__(self) -> str:
        return f"{self.x:g},{self.y:g},{self.size:g}"

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.size / 2, self.y + self.size / 2


@dataclass(frozen=True)
class AvatarChoice:
    """The user's choice of avatar, as the window remembers it and the command line gives it: the
    image file, its kind, its face box (None: found by face detection) and which of its faces are
    animated (``faces``: numbers 1.. left to right by face centre, sorted; None: all found, at most
    ``MAX_GROUP_FACES``). With a group, ``box`` corrects the first selected face's crop."""

    path: Path
    kind: AvatarKind = "human"
    box: AvatarBox | None = None
    faces: tuple[int, ...] | None = None


def parse_faces(text: str) -> tuple[int, ...] | None:
    """``--faces``: ``"all"`` -> None; ``"N"`` -> (N,); ``"i,j"`` -> (i, j), sorted and unique,
    each 1..``MAX_GROUP_FACES``; ``ValueError`` naming the problem otherwise."""
    cleaned = str(text).replace(" ", "").lower()
    if cleaned == "all":
        return None
    try:
        numbers = [int(part) for part in cleaned.split(",")]
    except ValueError:
        raise ValueError(f"faces: expected all, N or a list like 1,3 (faces numbered left to right), "
                         f"got {text!r}") from None
    bad = [n for n in numbers if not 1 <= n <= MAX_GROUP_FACES]
    if bad:
        raise ValueError(f"faces: expected numbers from 1 to {MAX_GROUP_FACES}, got {bad[0]}")
    return tuple(sorted(set(numbers)))
