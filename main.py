"""AvatarCam command line. Parses arguments and hands over to the app; no logic of its own."""
from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger("avatarcam")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from engines.device import DEVICE_CHOICES
    from engines.weights import WEIGHTS_ENV

    ap = argparse.ArgumentParser(prog="main.py", description="Animate a portrait with your webcam (LivePortrait).")
    ap.add_argument("--weights", metavar="DIR",
                    help=f"LivePortrait weights directory (default: ${WEIGHTS_ENV}, else the per-user cache)")
    ap.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="torch device (default: auto)")
    ap.add_argument("--no-download", action="store_true", help="never download missing weights")
    ap.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")

    from app.selfcheck import run_selfcheck
    from engines.checkpoints import CheckpointError
    from engines.device import resolve_device
    from engines.weights import WeightsError, resolve_weights_dir

    try:
        device = resolve_device(args.device)
        report = run_selfcheck(resolve_weights_dir(args.weights), device, download=not args.no_download)
    except (WeightsError, CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log.info("weights: %s (loaded in %.1f s) on %s", report.weights_dir, report.load_seconds, report.device)
    for stage, ms in report.stage_ms.items():
        log.info("  %-32s %8.1f ms", stage, ms)
    log.info("all seven LivePortrait networks are ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
