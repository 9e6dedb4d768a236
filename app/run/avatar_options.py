"""The avatar's command-line options (``--avatar-box``, ``--avatar-kind``, ``--faces``) and the ``AvatarChoice``
they make with ``--avatar``. They live here, not in ``app.cli``, because they need the avatar's
types (``app.avatar.framing``), which sit below ``app.cli`` in the layers."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..avatar.framing import AVATAR_KINDS, MAX_GROUP_FACES, AvatarBox, AvatarChoice, check_avatar_kind, parse_faces
from ..avatar.loading import DEFAULT_AVATAR


def _avatar_box(text: str) -> AvatarBox:
    """``--avatar-box``: ``X,Y,SIZE`` -> the box (an argparse error naming the problem otherwise)."""
    try:
        return AvatarBox.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _faces(text: str) -> tuple[int, ...] | None:
    """``--faces``: ``all|N|i,j`` -> the face numbers (an argparse error naming the problem otherwise)."""
    try:
        return parse_faces(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_avatar_arguments(group: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--avatar-box X,Y,SIZE`` (``args.avatar_box``: an ``AvatarBox`` or None) and
    ``--avatar-kind human|animal`` (``args.avatar_kind``, default human) and ``--faces all|N|i,j``
    (``args.faces``: the face numbers, None for all). ``--avatar`` is the
    entry point's own (its default differs between the window and the benchmarks)."""
    group.add_argument("--avatar-box", type=_avatar_box, metavar="X,Y,SIZE",
                       help="the avatar's face box: top-left corner and side of the square region that becomes "
                            "the face crop, in avatar pixels (X and Y may be negative: write --avatar-box=-40,-20,600; "
                            "outside the image is padded); for faces that are not detected, e.g. cartoons and "
                            "animals")
    group.add_argument("--faces", type=_faces, default=None, metavar="all|N|i,j",
                       help=f"which faces of a group photo are animated, numbered 1 to {MAX_GROUP_FACES} left to "
                            "right (default: all found, at most four; the others stay still); with --avatar-box, "
                            "the box corrects the first of them")
    group.add_argument("--avatar-kind", choices=AVATAR_KINDS, default="human",
                       help="which networks animate the avatar: human (default) or animal (cats, dogs)")


def avatar_choice_from_args(args: argparse.Namespace, default: str | Path = DEFAULT_AVATAR) -> AvatarChoice:
    """The avatar of ``--avatar`` (else ``default``), ``--avatar-kind``, ``--avatar-box`` and ``--faces``."""
    return AvatarChoice(Path(args.avatar or default), check_avatar_kind(getattr(args, "avatar_kind", "human")),
                        getattr(args, "avatar_box", None), getattr(args, "faces", None))
