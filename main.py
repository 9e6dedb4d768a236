"""AvatarCam command line. Parses arguments and hands over to the app; no logic of its own."""
from __future__ import annotations

import argparse
import logging
import os
import platform
import sys

log = logging.getLogger("avatarcam")

# The app's modules are imported inside the functions below on purpose: importing them loads torch,
# OpenCV and MediaPipe, and the MPS fallback switch and the silencing of native console output must
# be in place before those libraries load.


def _size(text: str) -> tuple[int, int]:
    from app.settings import parse_size

    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from app.avatar.loading import DEFAULT_AVATAR
    from app.cli.options import add_settings_arguments, add_token_arguments
    from app.run.avatar_options import add_avatar_arguments
    from app.settings import DEFAULT_FRAME_SIZE
    from engines.options import add_engine_arguments

    ap = argparse.ArgumentParser(prog="main.py", description="Animate a portrait with your webcam (LivePortrait).")
    mode = ap.add_argument_group("mode")
    mode.add_argument("--headless", action="store_true", help="run the live loop without a window (default: the app)")
    mode.add_argument("--check", action="store_true", help="check weights and networks, time one frame, exit")
    io = ap.add_argument_group("input and output")
    io.add_argument("--avatar",
                    help=f"portrait image to animate (default: the last one used, else {DEFAULT_AVATAR.name})")
    add_avatar_arguments(io)
    io.add_argument("--camera", help="camera index or video file (default: the last one used, else 0)")
    io.add_argument("--camera-size", type=_size, metavar="WxH",
                    help="requested camera resolution (default {}x{})".format(*DEFAULT_FRAME_SIZE))
    io.add_argument("--loop", action="store_true", help="video file camera: start again at the end")
    io.add_argument("--record", metavar="OUT.mp4", help="also write the output to a video file")
    io.add_argument("--max-frames", type=int, metavar="N",
                    help="stop after N frames animated from a tracked face (recording keeps only those)")
    io.add_argument("--virtual-camera", dest="virtual_camera", action="store_true", default=None,
                    help="send to a virtual camera (default: on for cameras, off for video files)")
    io.add_argument("--no-virtual-camera", dest="virtual_camera", action="store_false")
    io.add_argument("--vcam-size", type=_size, default=DEFAULT_FRAME_SIZE, metavar="WxH", help="virtual camera size")
    io.add_argument("--vcam-fps", type=float, default=30.0, help="virtual camera frame rate")
    add_engine_arguments(ap.add_argument_group("engine"), download=True, onnx_dir="onnxruntime backend",
                         engine_dir=True)
    remote = ap.add_argument_group("render on another machine (a server started with `main.py serve`)")
    remote.add_argument("--remote", metavar="URL",
                        help="animate on the render server at ws://HOST:PORT or wss://HOST:PORT (no weights needed)")
    add_token_arguments(remote, "the server's token")
    remote.add_argument("--remote-format", choices=("jpeg", "raw"), default="jpeg",
                        help="how frames travel: jpeg (default) or raw (lossless, about 1 MB per frame)")
    remote.add_argument("--remote-ca", metavar="PEM", help="wss://: trust this certificate (e.g. a self-signed one)")
    io.add_argument("--screenshot", metavar="OUT.png",
                    help="window mode: after --max-frames tracked frames (default 1) save a screenshot and exit")
    add_settings_arguments(ap.add_argument_group("animation (all adjustable live in the app)"))
    ap.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    args = ap.parse_args(argv)
    if args.max_frames is not None and args.max_frames < 1:
        ap.error("--max-frames must be at least 1")
    return args


def parse_serve_args(argv: list[str]) -> argparse.Namespace:
    from app.remote.server.cli import add_serve_arguments

    ap = argparse.ArgumentParser(prog="main.py serve",
                                 description="Render server: animate for AvatarCam clients elsewhere (Ray Serve).")
    add_serve_arguments(ap)
    ap.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return ap.parse_args(argv)


def settings_from_args(args: argparse.Namespace):
    from app.cli.options import settings_from_args

    return settings_from_args(args)


def requested_log_level(argv: list[str] | None) -> str:
    """``--log-level`` alone, read before the full parser, whose choices come from modules that load
    the native libraries: whether those may speak must be settled first."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--log-level", default="INFO")
    return pre.parse_known_args(argv)[0].log_level


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 2 bad input or setup (one ``error:`` line), 130 interrupted; anything
    else (an uncaught exception, with its traceback) is a bug."""
    from app.cli.console import native_output_silenced
    from engines.mps import enable_mps_fallback

    enable_mps_fallback(os.environ, platform.system())     # before anything imports torch
    with native_output_silenced(enabled=requested_log_level(argv) != "DEBUG"):
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    from app.cli.console import EXIT_BAD_INPUT, EXIT_INTERRUPTED, configure_logging, report_error

    argv = sys.argv[1:] if argv is None else argv
    serving = bool(argv) and argv[0] == "serve"
    args = parse_serve_args(argv[1:]) if serving else parse_args(argv)
    configure_logging(args.log_level)
    logging.captureWarnings(True)       # e.g. torch naming an operator that falls back from MPS to the CPU

    from app.avatar.face import NoFaceError
    from app.imaging.image_io import ImageError
    from app.live.capture import CameraError
    from app.live.sinks import RecordingError
    from engines.checkpoints import CheckpointError
    from engines.weights import WeightsError

    try:
        if serving:
            from app.remote.server.cli import run_server
            return run_server(args)
        if args.check:
            from app.diagnostics.selfcheck import main_selfcheck
            return main_selfcheck(args)
        if args.headless:
            from app.run.headless import run_headless
            return run_headless(args, settings_from_args(args))
        from app.ui.app import run_app
        return run_app(args, settings_from_args(args))
    except KeyboardInterrupt:
        log.info("interrupted")
        return EXIT_INTERRUPTED
    except (WeightsError, CheckpointError, ImageError, NoFaceError, CameraError, RecordingError, ValueError) as e:
        log.debug("details", exc_info=True)
        report_error(str(e))
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
