"""The ``faceid`` command: one sub-command per script of the original design.

    faceid network --backbone dlib --output models/extractor      = python network.py ...
    faceid extract --faces_path faces --features features          = python extract_features.py ...
    faceid identify --video_path clip.mp4 --no_display             = python test.py ...

Each sub-command runs the same ``faceid.cli.<module>.main`` as its root script, with the same
parser; only the program name in its usage line differs. ``faceid --help`` lists them all, one
line each, read from each module's docstring without importing it (so listing them stays fast and
imports no model library).
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import sys
from dataclasses import dataclass

import faceid

PROG = "faceid"


@dataclass(frozen=True)
class SubCommand:
    name: str  # what the user types after faceid
    module: str  # faceid.cli.<module>, whose main(argv) runs it
    script: str  # the root script of the original design that runs the same code
    aliases: tuple[str, ...] = ()


# In the order the pipeline runs: build the folders, the extractor, the cache, train, identify, measure.
SUBCOMMANDS = (
    SubCommand("capture", "capture", "capture.py"),
    SubCommand("selfies2face", "selfies2face", "selfies2face.py"),
    SubCommand("check-faces", "check_faces", "check_faces.py", ("check_faces",)),
    SubCommand("network", "network", "network.py"),
    SubCommand("extract", "extract_features", "extract_features.py", ("extract_features",)),
    SubCommand("compute-mean", "compute_mean", "compute_mean.py", ("compute_mean",)),
    SubCommand("train", "train", "train.py"),
    SubCommand("train-siamese", "train_siamese", "train_siamese.py", ("train_siamese",)),
    SubCommand("identify", "identify", "test.py", ("test",)),
    SubCommand("evaluate", "evaluate", "evaluate.py"),
    SubCommand("photo2sketch", "photo2sketch", "photo2sketch.py"),
    SubCommand("retrieve", "retrieve", "retrieve.py"),
    SubCommand("cluster", "cluster", "cluster.py"),
    SubCommand("keys", "keys", "keys.py"),
    SubCommand("forget", "forget", "forget.py"),
    SubCommand("bench", "bench", "bench.py"),
    SubCommand("serve", "serve", "serve.py"),
)


def find_subcommand(name: str) -> SubCommand | None:
    for command in SUBCOMMANDS:
        if name == command.name or name in command.aliases:
            return command
    return None


def summary_line(command: SubCommand) -> str:
    """The first line of the sub-command module's docstring, read from its source (no import)."""
    spec = importlib.util.find_spec(f"faceid.cli.{command.module}")
    with open(spec.origin, encoding="utf-8") as source:
        docstring = ast.get_docstring(ast.parse(source.read())) or ""
    return docstring.strip().splitlines()[0] if docstring.strip() else ""


def usage() -> str:
    width = max(len(command.name) for command in SUBCOMMANDS)
    lines = [
        f"usage: {PROG} [--version] [--help] <command> [options]",
        "",
        "Enrol a few photos per person, then recognise them live. Each command is one of the original",
        "design's scripts (python <script> takes the same options); 'faceid <command> --help' gives them.",
        "",
        "commands:",
    ]
    for command in SUBCOMMANDS:
        lines.append(f"  {command.name:<{width}}  {summary_line(command).rstrip('.')} ({command.script})")
    lines += [
        "",
        "options:",
        "  -h, --help  show this message and exit",
        "  --version   show faceid's version and exit",
        "",
        'The core install runs enrolment, extraction, identification, evaluation and retrieval with the',
        'dlib backbone; train, train-siamese (but --init hog) and the resnet50 backbone need "faceid[train]",',
        'the FAISS shortlist "faceid[search]", evaluate\'s --plots/--html "faceid[plots]", a window "faceid[gui]".',
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"{PROG} {faceid.__version__}")
        return 0
    command = find_subcommand(argv[0])
    if command is None:
        names = [name for known in SUBCOMMANDS for name in (known.name, *known.aliases)]
        close = difflib.get_close_matches(argv[0], names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"usage: {PROG} [--version] [--help] <command> [options]\n"
              f"{PROG}: error: unknown command {argv[0]!r}{hint}; '{PROG} --help' lists them", file=sys.stderr)
        return 2
    # argparse names the program after sys.argv[0]: "faceid extract" in usage lines and errors.
    sys.argv = [f"{PROG} {command.name}", *argv[1:]]
    return importlib.import_module(f"faceid.cli.{command.module}").main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
