"""What every script shares: verbosity flags, logging set-up and error reporting."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from faceid.errors import FaceIdError

if TYPE_CHECKING:
    from faceid.io.sealed import Key


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

    live_cnn = f", {DEFAULTS.live_cnn_upsample} with the cnn detectors (video speed)" if live else ""
    parser.add_argument("--upsample", type=int, default=None,
                        help="finding smaller faces, each step at ~4x the time: dlib's detectors double the image "
                             "(0: faces > ~80 px, 1: ~40 px, 2: ~20 px); blazeface also searches a grid of squares "
                             "twice as fine (0: faces down to ~1/16 of the longer side, 1: ~1/32); default: "
                             f"{DEFAULTS.upsample} with hog{live_cnn or ' and cnn'}, {DEFAULTS.blazeface_upsample} "
                             "with blazeface")
    parser.add_argument("--detector", choices=DETECTORS, default=DEFAULTS.live_detector if live else DEFAULTS.detector,
                        help="hog: dlib's HOG, fast, frontal faces only; cnn: dlib's CNN detector on our ONNX "
                             "graph, also finds three-quarter views and profiles; cnn-dlib: the same CNN run by "
                             "dlib (the reference, ~25x slower); blazeface: MediaPipe's BlazeFace on our ONNX graph, "
                             "turned faces, profiles and small faces in a few ms a frame")


def warn_if_no_window(no_display: bool) -> None:
    """For a script about to fall back to no window: say so where the user will have expected one."""
    from faceid.io.display import headless_build_on_a_desktop

    reason = None if no_display else headless_build_on_a_desktop()
    if reason:
        print(f"note: no window: {reason}; running without one (--no_display says so and hides this note)",
              file=sys.stderr)


def setup_script(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None,
                 aliases: Mapping[str, str] | None = None) -> None:
    """Configure logging once, in the script (the package never does).

    The key is not read here but by :func:`script_key`, inside the body that
    :func:`run_reporting_errors` runs, so a bad key file is reported like any other error.
    With the script's ``parser``, the library's warnings name its flags, as its errors do
    (:func:`translate_message`).
    """
    level = logging.DEBUG if args.verbose else logging.ERROR if args.quiet else logging.WARNING
    # TensorFlow's C++ banners (oneDNN, CPU features) go to stderr before any of our
    # messages; keep them for -v only. Must be set before TensorFlow is imported.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if args.verbose else "2")
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", force=True)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_ScriptFormatter("%(levelname)s: %(message)s", parser=parser, aliases=aliases))


class _ScriptFormatter(logging.Formatter):
    """Log records in the script's words: a parameter in backticks becomes its flag."""

    def __init__(self, fmt: str, parser: argparse.ArgumentParser | None, aliases: Mapping[str, str] | None):
        super().__init__(fmt)
        self._parser, self._aliases = parser, aliases

    def format(self, record: logging.LogRecord) -> str:
        return translate_message(super().format(record), self._parser, self._aliases)


# Parameters of the library that the scripts' options spell otherwise: parameter -> the option's dest, or
# (starting with "-") the words to print where the parser has that option. Used only where the script
# has the option; a script adds its own (run_main's ``aliases``).
COMMON_ALIASES = {
    "key": "key_file",
    "faces_root": "faces_path",
    "features_dir": "features",
    "extractor": "model_path",
    "head": "classification",
    "scorers": "scorer",
    "selfies_root": "face_selfies",
    "destination": "quarantine",
    "output_path": "output",
    "jsonl_path": "jsonl",
    "plots_dir": "plots",
    "html_path": "html",
    "detect": "--no_detect",
    "display": "--no_display",
    "export_onnx": "--export none",
}
# How a library message names a parameter: in backticks (faceid/errors.py).
_PARAMETER = re.compile(r"`([^`\s]+)`")


def option_flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each option's ``dest``, and each of its ``--names``, -> its (first) long flag.

    ``"classification"`` -> ``"--classification"``; ``"features_path"`` and ``"features"`` ->
    ``"--features"`` for ``--features/--features_path``. Sub-commands' options count too (the
    parser's own options win over theirs); positionals have no flag.
    """
    flags: dict[str, str] = {}
    other_names: dict[str, str] = {}
    subparsers = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            subparsers.extend(action.choices.values())
        elif action.option_strings:
            long_flags = [option for option in action.option_strings if option.startswith("--")]
            flag = (long_flags or action.option_strings)[0]
            flags.setdefault(action.dest, flag)
            for option in long_flags:
                other_names.setdefault(option[2:], flag)
    for name, flag in other_names.items():
        flags.setdefault(name, flag)
    for subparser in subparsers:
        for dest, flag in option_flags(subparser).items():
            flags.setdefault(dest, flag)
    return flags


def translate_message(message: str, parser: argparse.ArgumentParser | None = None,
                      aliases: Mapping[str, str] | None = None) -> str:
    """A library message in the script's words: each `` `name` `` becomes the flag that sets it.

    ``name`` is a parameter of the library; it is looked up in ``aliases`` (library name -> the
    option's ``dest``, where the script spells it otherwise, or the words to print when they start
    with ``-``, e.g. ``"--export none"``; :data:`COMMON_ALIASES` for every script), then among the
    parser's options by ``dest`` or name. A name no option sets is printed without its backticks.
    """
    flags = option_flags(parser) if parser is not None else {}
    names = {**COMMON_ALIASES, **(aliases or {})}

    def as_flag(match: re.Match) -> str:
        name = match.group(1)
        alias = names.get(name, name)
        if alias.startswith("-"):
            return alias if alias.split()[0] in flags.values() else name
        return flags.get(alias) or flags.get(name) or name

    return _PARAMETER.sub(as_flag, message)


def run_main(parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], int], argv: list[str] | None,
             aliases: Mapping[str, str] | None = None) -> int:
    """A script's ``main``: parse ``argv`` (usage errors exit 2), set up logging, run ``body(args)``.

    ``aliases``: library parameter -> this parser's ``dest``, where they differ (:func:`translate_message`).
    """
    args = parser.parse_args(argv)
    setup_script(args, parser, aliases)

    def keyed_body() -> int:
        script_key(args)  # sets args.key; a bad key file is an error: line like any other
        return body(args)

    return run_reporting_errors(keyed_body, parser, aliases)


def script_key(args: argparse.Namespace) -> Key | None:
    """The key a script passes down to the package (``key=``): ``--key_file``, else ``$FACEID_KEY``,
    else ``None`` (no encryption). Read once and kept as ``args.key``.

    The one place a script reads the environment for a key (the package never does). A script
    without ``--key_file`` (:func:`add_verbosity` with ``key_file=False``) has no key. Call it inside
    the body :func:`run_reporting_errors` runs (:func:`run_main` does): a missing or malformed key
    file raises :class:`faceid.io.sealed.SealError`.
    """
    if getattr(args, "key", None) is None:
        from faceid.io.sealed import KEY_ENV, key_from_text, read_key_file

        key = None
        if "key_file" in vars(args):
            if args.key_file:
                key = read_key_file(args.key_file)
            elif os.environ.get(KEY_ENV):
                key = key_from_text(os.environ[KEY_ENV], f"${KEY_ENV}")
        args.key = key
    return args.key


def run_reporting_errors(body: Callable[[], int], parser: argparse.ArgumentParser | None = None,
                         aliases: Mapping[str, str] | None = None) -> int:
    """Run a script body; a :class:`FaceIdError` becomes ``error: ...`` on stderr and exit 1.

    The message names the library's parameters (`` `classification` ``); with the script's
    ``parser`` each becomes the script's flag (``--classification``), see :func:`translate_message`.
    """
    try:
        return body()
    except FaceIdError as error:
        print(f"error: {translate_message(str(error), parser, aliases)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished work was kept", file=sys.stderr)
        return 130
