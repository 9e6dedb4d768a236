"""Both renderers take all three avatars (a still, a group photo, a video): a video file's face
carries its clip (``AvatarFace.video``), which the local renderer prepares as a clip and the remote
one uploads as one; a group keeps its faces through the remote renderer."""
from __future__ import annotations

import numpy as np

from app.avatar.face import avatar_face_from_crop, avatar_group_from_faces
from app.avatar.video import avatar_video_from_crops
from app.remote import protocol as p
from app.remote.client import RemoteServer
from app.run.renderer import LocalRenderer, RemoteRenderer
from engines.backend import StubBackend

RATIOS = (np.array([[0.3, 0.3]], np.float32), np.array([[0.1]], np.float32))


def clip_face():
    clip = avatar_video_from_crops([np.full(p.CROP_SHAPE, g, np.uint8) for g in (40, 90, 140)],
                                   np.full((3, 2), 0.3), np.full((3, 1), 0.1), 12.0)
    return clip, clip.face(0)


def test_a_video_frames_face_carries_its_clip_and_the_local_renderer_prepares_the_clip():
    clip, face = clip_face()
    assert face.video is clip and clip.face(2).video is clip
    prepared = LocalRenderer(StubBackend()).adopt(face)
    assert prepared.video is not None and prepared.video.num_frames == 3


def test_the_remote_renderer_keeps_a_groups_faces_and_a_videos_clip_for_upload():
    renderer = RemoteRenderer(RemoteServer.parse("ws://127.0.0.1:9"))
    faces = [avatar_face_from_crop(np.full(p.CROP_SHAPE, g, np.uint8), *RATIOS) for g in (60, 120, 180)]
    group = renderer.adopt(avatar_group_from_faces(faces))
    assert len(group.face.group) == 3 and [f.number for f in group.face.group] == [1, 2, 3]
    assert len(group.upload.header["faces"]) == 3 and group.upload.faces == 3
    clip, face = clip_face()
    video = renderer.adopt(face)
    assert video.upload.header["video"] == {"fps": 12.0, "frames": 3} and len(video.upload.frames) == 3
    assert video.upload.payload == b"" and video.upload.faces == 1
