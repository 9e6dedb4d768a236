"""A running live session for the desktop app: the pipeline plus the controls the window needs
(switch camera, switch avatar, switch where the animation runs, virtual camera on/off, calibrate),
none of which stops the animation for longer than a camera re-open.

The session owns one animator (avatar state, neutral reference, filters) across camera changes:
an ``Animator`` on this computer or a ``RemoteAnimator`` on a render server, made by the session's
``Renderer`` (``app.run.renderer``), which also prepares the avatars it is handed; an avatar of
another kind that the renderer cannot hand to the running animator (a local one holds one kind's
networks) gets a new animator, with the loop stopped while the other kind's networks load. Slow work (loading
an avatar, opening a camera, connecting to a server or loading the networks) runs in worker
threads; results and failures come back through callbacks, which the window marshals onto the Qt
thread."""
from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..animation.frames import AnimatedAvatar, AvatarT, FrameAnimator
from ..avatar.face import AvatarFace
from ..avatar.framing import AvatarChoice, AvatarKind
from ..avatar.loading import load_avatar_face
from ..avatar.video import is_video_file
from ..face.driving import DrivingFace
from ..live.capture import CameraError, CameraRequest, CameraSource
from ..live.pipeline import OutputFrame, Pipeline, PipelineStats
from ..live.sinks import OutputStage, VirtualCameraSink, VirtualCameraUnavailable
from ..live.wiring import build_pipeline
from ..settings import DEFAULT_FRAME_SIZE
from .renderer import Renderer

log = logging.getLogger(__name__)


class VirtualCameraState(StrEnum):
    """The virtual camera switch's state; the value is the text the window shows."""

    OFF = "off"
    ON = "on"
    UNAVAILABLE = "unavailable"


@dataclass
class SessionCallbacks:
    """Called from worker threads; the UI must hand them over to its own thread."""

    frame: Callable[[OutputFrame], None] = lambda f: None
    tracked: Callable[[DrivingFace | None], None] = lambda f: None
    avatar_loaded: Callable[[str, AnimatedAvatar], None] = lambda p, a: None
    error: Callable[[str], None] = lambda msg: None
    camera_changed: Callable[[str], None] = lambda status: None
    renderer_changed: Callable[[Renderer[Any]], None] = lambda r: None
    renderer_failed: Callable[[str], None] = lambda msg: None      # a switch failed; the renderer stays
    # an avatar could not be loaded (the current one stays): the exception itself, so the window can
    # offer the face box editor on a NoFaceError; None: ``error`` gets its one line
    avatar_failed: Callable[[AvatarChoice, Exception], None] | None = None


class LiveSession:
    """``animator``: made by ``renderer`` (connected, for a server); the session closes it.

    The two change together at a renderer switch, and with them the avatar type (``Any`` below:
    whichever it is, every avatar handed to the animator was prepared by the session's renderer)."""

    def __init__(self, renderer: Renderer[Any], animator: FrameAnimator[Any],
                 callbacks: SessionCallbacks | None = None, *, vcam_size: tuple[int, int] = DEFAULT_FRAME_SIZE,
                 vcam_fps: float = 30.0, vcam_backend: str | None = None,
                 max_tracked_frames: int | None = None, avatar_path: str | None = None) -> None:
        self.renderer = renderer
        self.animator = animator
        self.settings = animator.settings
        self.callbacks = callbacks or SessionCallbacks()
        self.avatar_path = avatar_path
        # the face of the newest avatar handed to the animator (its kind: the animator's)
        self._avatar_face: AvatarFace = animator.avatar.face
        self.vcam_size, self.vcam_fps, self.vcam_backend = vcam_size, vcam_fps, vcam_backend
        self.vcam_state = VirtualCameraState.OFF
        self.vcam_message = ""
        self._vcam: VirtualCameraSink | None = None
        self.output = OutputStage([])       # the preview gets frames through callbacks.frame
        self.max_tracked_frames = max_tracked_frames
        self.pipeline: Pipeline | None = None
        self._camera: CameraRequest | None = None     # the camera in use (or last asked for)
        self._lock = threading.Lock()
        self._closed = False
        self._openings = 0                 # camera openings queued or running (open_camera_async)
        self._openings_lock = threading.Lock()
        self._switching = threading.RLock()   # one renderer or animator switch at a time
        self._paused = False                # the loop is stopped for an animator switch: no restart
        self._loading = threading.Lock()    # avatars load in turn: a kind change is seen by the next

    # -- camera --------------------------------------------------------------------------------
    def open_camera(self, request: CameraRequest) -> None:
        """Stop the running capture (if any) and start on ``request``; errors go to the callback
        and the previous frame stays on screen."""
        with self._lock:
            if self._closed:
                return
            self._stop_pipeline()
            self._start_pipeline(request)

    def _start_pipeline(self, request: CameraRequest) -> None:
        """Open ``request`` and run the loop on it (the lock held, no pipeline running); while an
        animator switch has the loop stopped, only note it (the switch starts it)."""
        self._camera = request
        if self._paused:
            return
        try:
            camera = CameraSource(request)
        except CameraError as e:
            self.callbacks.error(str(e))
            self.callbacks.camera_changed(f"camera unavailable: {e}")
            return
        self.pipeline = build_pipeline(camera, self.animator, self.output, lossless=False,
                                       max_tracked_frames=self.max_tracked_frames,
                                       on_frame=self.callbacks.frame, on_tracked=self.callbacks.tracked,
                                       keep_outputs_open=True).start()
        self.callbacks.camera_changed(f"{'video' if camera.is_file else 'camera'} {request.source}: "
                                      f"{camera.frame_size[0]}x{camera.frame_size[1]} at {camera.fps:.0f} fps")

    def open_camera_async(self, request: CameraRequest) -> threading.Thread:
        """``open_camera`` in a worker thread, for the UI: stopping the old capture waits for the
        frame in flight (seconds on a CPU) and opening a camera can take a second. Requests are
        served in turn."""
        with self._openings_lock:
            self._openings += 1

        def work() -> None:
            try:
                self.open_camera(request)
            finally:
                with self._openings_lock:
                    self._openings -= 1
        t = threading.Thread(target=work, name="camera-opener", daemon=True)
        t.start()
        return t

    @property
    def camera_opening(self) -> bool:
        """A camera is being opened (the pipeline may be None or about to be replaced)."""
        with self._openings_lock:
            return self._openings > 0

    @property
    def stats(self) -> PipelineStats | None:
        return self.pipeline.stats if self.pipeline else None

    # -- avatar --------------------------------------------------------------------------------
    def load_avatar_async(self, choice: AvatarChoice) -> threading.Thread:
        """Prepare the avatar in a worker thread; on success it replaces the current one between two
        frames (after a pause of the loop when it needs a new animator: another kind's networks),
        on failure the current avatar stays and ``avatar_failed`` gets the exception (without it,
        the error callback gets one line)."""
        def work() -> None:
            try:
                with self._loading:
                    avatar = self._load_avatar(choice)
            except Exception as e:  # noqa: BLE001 - any failure leaves the old avatar in place
                if self.callbacks.avatar_failed is not None:
                    self.callbacks.avatar_failed(choice, e)
                else:
                    self.callbacks.error(str(e) if isinstance(e, ValueError) else f"{choice.path}: {e}")
                return
            self.avatar_path = str(choice.path)
            self.callbacks.avatar_loaded(str(choice.path), avatar)
        t = threading.Thread(target=work, name="avatar-loader", daemon=True)
        t.start()
        return t

    def _load_avatar(self, choice: AvatarChoice) -> AnimatedAvatar:
        renderer = self.renderer
        if renderer.needs_new_animator(self._avatar_face, choice.kind):
            if is_video_file(choice.path):
                # a clip is prepared whole (its frames' motion) by the renderer of its kind, so
                # only once the loop has stopped; its problems then show after the pause
                return self._hand_over_choice(choice)
            # the image's problems first, while the loop still runs
            return self._hand_over_face(load_avatar_face(choice))
        avatar = renderer.load_avatar(choice)
        if self._hand_over_avatar(renderer, avatar):
            return avatar
        if is_video_file(choice.path):
            return self._hand_over_choice(choice)  # the renderer changed meanwhile: the clip again
        return self._hand_over_face(avatar.face)    # the renderer changed meanwhile

    def _hand_over_choice(self, choice: AvatarChoice) -> AnimatedAvatar:
        """``choice`` loaded by the session's renderer and handed to its animator (a video avatar:
        it cannot be prepared from one ``AvatarFace``); see ``_hand_over``."""
        return self._hand_over(choice.kind, lambda renderer: renderer.load_avatar(choice))

    def _hand_over_face(self, face: AvatarFace) -> AnimatedAvatar:
        """``face`` prepared by the session's renderer and handed to its animator; see ``_hand_over``."""
        return self._hand_over(face.kind, lambda renderer: renderer.adopt(face))

    def _hand_over(self, kind: AvatarKind, prepare: Callable[[Renderer[Any]], Any]) -> AnimatedAvatar:
        """The avatar ``prepare`` makes with the session's renderer, handed to its animator, or to a
        new animator when the renderer needs one for ``kind`` (``_switch_animator``); made again
        for the new renderer when the renderer changed meanwhile."""
        while True:
            renderer = self.renderer
            if renderer.needs_new_animator(self._avatar_face, kind):
                avatar = self._switch_animator(renderer, functools.partial(prepare, renderer))
            else:
                avatar = prepare(renderer)
                if not self._hand_over_avatar(renderer, avatar):
                    avatar = None
            if avatar is not None:
                return avatar

    def _switch_animator(self, renderer: Renderer[Any], prepare: Callable[[], Any]) -> AnimatedAvatar | None:
        """A new animator of ``renderer`` for the avatar ``prepare`` makes with ``renderer``, the
        loop stopped first (preparing it may close the networks the current animator uses) and
        started again on the same camera; None when ``renderer`` is no longer the session's. On
        failure the current avatar is prepared again (its networks may have been closed) and the
        error raised."""
        with self._switching:
            with self._lock:
                if self.renderer is not renderer:
                    return None
                if self._closed:
                    raise RuntimeError("the session is closed")
                self._stop_pipeline()
                self._paused = True
            try:
                try:
                    avatar = prepare()
                    animator = renderer.animator(self.settings, avatar)
                except Exception as error:
                    log.info("a new animator failed (%s); preparing the current avatar again", error)
                    try:
                        self._replace_animator(renderer.animator(self.settings, renderer.adopt(self._avatar_face)),
                                               self._avatar_face)
                    except Exception as again:  # noqa: BLE001 - the first error is the user's
                        log.warning("the current avatar could not be prepared again: %s", again)
                    raise error from None
                self._replace_animator(animator, avatar.face)
                log.info("animating a %s avatar", avatar.face.kind)
                return avatar
            finally:
                with self._lock:
                    if self._paused:       # nothing could be made: the loop stays stopped
                        self._paused = False
                        self.callbacks.camera_changed("stopped: the avatar's networks could not be loaded")

    def _replace_animator(self, animator: FrameAnimator[Any], face: AvatarFace) -> None:
        """``animator`` (for ``face``) in place of the current one, the loop (stopped) started again."""
        with self._lock:
            self._paused = False
            if self._closed:
                animator.close()
                return
            old, self.animator = self.animator, animator
            self._avatar_face = face
            old.close()                 # no frame is in flight once the pipeline has stopped
            if self._camera is not None:
                self._start_pipeline(self._camera)

    def _hand_over_avatar(self, renderer: Renderer[AvatarT], avatar: AvatarT) -> bool:
        """``avatar`` (prepared by ``renderer``) to the animator; False when ``renderer`` is no
        longer the session's."""
        with self._lock:
            if self.renderer is not renderer:
                return False
            self.animator.set_avatar(avatar)
            self._avatar_face = avatar.face
            return True

    # -- where the animation runs --------------------------------------------------------------
    def switch_renderer_async(self, make_renderer: Callable[[], Renderer[Any]]) -> threading.Thread:
        """Animate with the renderer ``make_renderer`` returns from now on, in a worker thread:
        make it (load networks, connect to a server), prepare the current avatar for it and make
        its animator, then restart the loop on the same camera with it (the neutral reference is
        taken again). On success ``renderer_changed`` is called; on failure the current renderer
        stays and ``renderer_failed`` gets one line."""
        def work() -> None:
            with self._switching:
                face = self._avatar_face
                try:
                    renderer = make_renderer()
                    animator = renderer.animator(self.settings, renderer.adopt(face))
                except Exception as e:  # noqa: BLE001 - any failure leaves the current renderer in place
                    self.callbacks.renderer_failed(str(e) if isinstance(e, ValueError)
                                                   else f"{type(e).__name__}: {e}")
                    return
                with self._lock:
                    if self._closed:
                        animator.close()
                        return
                    self._stop_pipeline()
                    old, self.renderer, self.animator = self.animator, renderer, animator
                    # the new animator's avatar; one loaded for the old renderer meanwhile follows
                    newest, self._avatar_face = self._avatar_face, face
                    old.close()             # no frame is in flight once the pipeline has stopped
                    if self._camera is not None:
                        self._start_pipeline(self._camera)
                if newest is not face:
                    try:
                        self._hand_over_face(newest)
                    except Exception as e:  # noqa: BLE001 - the switch stands; the earlier avatar stays
                        self.callbacks.error(f"avatar: {e}")
                log.info("animating on %s", renderer.where)
                self.callbacks.renderer_changed(renderer)
        t = threading.Thread(target=work, name="renderer-switch", daemon=True)
        t.start()
        return t

    # -- virtual camera ------------------------------------------------------------------------
    def set_virtual_camera(self, on: bool) -> VirtualCameraState:
        if on and self._vcam is None:
            try:
                self._vcam = VirtualCameraSink(*self.vcam_size, self.vcam_fps, backend=self.vcam_backend)
            except VirtualCameraUnavailable as e:
                self.vcam_state, self.vcam_message = VirtualCameraState.UNAVAILABLE, str(e)
                return self.vcam_state
            self.output.add(self._vcam)
            self.vcam_state, self.vcam_message = VirtualCameraState.ON, f"sending to {self._vcam.camera.device}"
        elif not on and self._vcam is not None:
            self.output.remove(self._vcam)
            self._vcam = None
            self.vcam_state, self.vcam_message = VirtualCameraState.OFF, ""
        return self.vcam_state

    # -- misc ----------------------------------------------------------------------------------
    def calibrate(self) -> None:
        self.animator.calibrate()

    def close(self) -> bool:
        """Stop all threads and release the camera, the virtual camera and the animator's
        segmenter."""
        with self._lock:
            if self._closed:
                return True
            self._closed = True
            ok = self._stop_pipeline()
            self.animator.close()       # no frame is in flight once the pipeline has stopped
            self.output.close()
            self._vcam = None
            return ok

    def _stop_pipeline(self) -> bool:
        if self.pipeline is None:
            return True
        ok = self.pipeline.shutdown()
        self.pipeline = None
        return ok

