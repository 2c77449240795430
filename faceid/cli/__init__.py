"""What every script shares: verbosity flags, logging set-up and error reporting."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from faceid.errors import FaceIdError


def add_verbosity(parser: argparse.ArgumentParser, key_file: bool = True) -> None:
    """``-v``/``-q`` and, for every script that reads or writes faces or their vectors, ``--key_file``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true", help="log each step (debugging)")
    group.add_argument("-q", "--quiet", action="store_true", help="only errors; no progress bar")
    if key_file:
        parser.add_argument("--key_file", default=None, metavar="FILE",
                            help="encryption key (keys.py new --output FILE): feature caches and face crops "
                                 "this writes are encrypted with it (AES-256-GCM), encrypted ones are read with it; "
                                 "default: $FACEID_KEY if set, else no encryption")


def add_detection_options(parser, live: bool = False) -> None:
    """``--upsample`` and ``--detector``: every script that finds faces offers them the same way.

    ``live``: live identification's defaults (``DEFAULTS.live_detector``; ``--upsample`` left
    ``None``, resolved by :func:`faceid.detect.faces.live_upsample` for the chosen detector).
    """
    from faceid.detect.faces import DETECTORS
    from faceid.settings import DEFAULTS

    upsample_default = (f"default: {DEFAULTS.upsample} with hog, {DEFAULTS.live_cnn_upsample} with the cnn detectors "
                        "(video speed)") if live else f"default {DEFAULTS.upsample}"
    parser.add_argument("--upsample", type=int, default=None if live else DEFAULTS.upsample,
                        help="detector upsampling: 0 is fastest (faces > ~80 px), 1 finds ~40 px faces, 2 ~20 px, "
                             f"each step ~4x the time; {upsample_default}")
    parser.add_argument("--detector", choices=DETECTORS, default=DEFAULTS.live_detector if live else DEFAULTS.detector,
                        help="hog: dlib's HOG, fast, frontal faces only; cnn: dlib's CNN detector on our ONNX "
                             "graph, also finds three-quarter views and profiles; cnn-dlib: the same CNN run by "
                             "dlib (the reference, ~25x slower)")


def warn_if_no_window(no_display: bool) -> None:
    """For a script about to fall back to no window: say so where the user will have expected one."""
    from faceid.io.display import headless_build_on_a_desktop

    reason = None if no_display else headless_build_on_a_desktop()
    if reason:
        print(f"note: no window: {reason}; running without one (--no_display says so and hides this note)",
              file=sys.stderr)


def setup_script(args: argparse.Namespace) -> None:
    """Configure logging and the key once, in the script (the package never does).

    The key (``--key_file``, else ``$FACEID_KEY``) is read when first needed, so a bad key file is
    reported like any other error, by :func:`run_reporting_errors`.
    """
    from faceid.io.sealed import configure_key

    configure_key(getattr(args, "key_file", None))
    level = logging.DEBUG if args.verbose else logging.ERROR if args.quiet else logging.WARNING
    # TensorFlow's C++ banners (oneDNN, CPU features) go to stderr before any of our
    # messages; keep them for -v only. Must be set before TensorFlow is imported.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if args.verbose else "2")
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", force=True)


def run_main(parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], int], argv: list[str] | None) -> int:
    """A script's ``main``: parse ``argv`` (usage errors exit 2), set up logging, run ``body(args)``."""
    args = parser.parse_args(argv)
    setup_script(args)
    return run_reporting_errors(lambda: body(args))


def run_reporting_errors(body: Callable[[], int]) -> int:
    """Run a script body; a :class:`FaceIdError` becomes ``error: ...`` on stderr and exit 1."""
    try:
        return body()
    except FaceIdError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished work was kept", file=sys.stderr)
        return 130
