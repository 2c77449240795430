"""The documentation: the site builds, its examples run, its commands parse, README stays short.

- ``mkdocs build --strict`` succeeds (broken links and anchors are errors), the CLI reference holds every
  option of every parser and the architecture page holds ARCHITECTURE.md (both generated, so they cannot
  drift).
- Every ```python block of README.md and docs/ runs, page by page in order (one namespace per page, in a
  fresh process), in a folder laid out with the real photos the examples name. A block preceded by
  ``<!-- docs-test: skip (why) -->`` is not run (a webcam loop).
- Every shell line that calls one of our scripts (``python network.py …``, ``faceid <command> …``,
  ``./run.sh …``) is parsed by that script's own argparse parser, abbreviations off: an option renamed
  or removed in the code fails here until the docs follow.
- README's own command lines (capture → check → network → extract → identify, on video files) are run
  for real, in README's order; only the lines that would open a webcam are left out (and parsed).
- README.md has at most 200 lines, and no page gives line counts of code.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from conftest import KNOWN, LFW, REPO, VIDEO, run_process

DOC_PAGES = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
SKIP_MARKER = "<!-- docs-test: skip"
README_MAX_LINES = 200
FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)\s*$")
# "settings.py (148)", "siamese.py (98: trained towers)", "(43-296 lines)", "Line counts as of ...".
LINE_COUNT = re.compile(r"\b\w+\.py \(\d+[):]|\(\d+\s*[-–]\s*\d+ lines\)|\b\d+ lines of code\b|\bline counts?\b", re.I)


def code_blocks(page: Path) -> list[dict]:
    """The fenced code blocks of a Markdown page: language, code, first line, skip marker."""
    blocks, lines, index = [], page.read_text(encoding="utf-8").splitlines(), 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening or not opening.group(2):
            index += 1
            continue
        indent, language, start = opening.group(1), opening.group(2).lower(), index + 1
        end = start
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        previous = next((line.strip() for line in reversed(lines[:index]) if line.strip()), "")
        code = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in lines[start:end])
        blocks.append({"language": language, "code": code, "line": start + 1,
                       "skip": previous.startswith(SKIP_MARKER)})
        index = end + 1
    return blocks


def page_name(page: Path) -> str:
    return page.relative_to(REPO).as_posix()


# --- (a) the site builds -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def built_site(tmp_path_factory) -> Path:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None:
        pytest.fail('the docs packages are missing: pip install -e ".[dev]" (./run.sh setup installs them)',
                    pytrace=False)
    site = tmp_path_factory.mktemp("site")
    result = run_process([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                         what="mkdocs build --strict", cwd=REPO,
                         env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}{result.stderr}"
    return site


def test_docs_site_builds_strict(built_site):
    for page in ("index.html", "python-api/index.html", "reference/api/index.html", "reference/cli/index.html"):
        assert (built_site / page).is_file(), page


def _parsers():
    """``(title, parser)`` for every script and every sub-command of one (``evaluate pairs``)."""
    from faceid.cli.main import SUBCOMMANDS

    for command in SUBCOMMANDS:
        script = importlib.import_module(f"faceid.cli.{command.module}")
        stack = [(f"faceid {command.name}", script.build_parser())]
        stack += [(f"faceid {command.name} {word}", build()) for word, build in getattr(script, "LEADING_PARSERS", {}).items()]
        while stack:
            title, current = stack.pop()
            yield title, current
            for action in current._actions:
                if isinstance(action, argparse._SubParsersAction):
                    stack += [(f"{title} {name}", sub) for name, sub in action.choices.items()]


def test_cli_reference_lists_every_option_of_every_parser(built_site):
    page = (built_site / "reference/cli/index.html").read_text(encoding="utf-8")
    missing = []
    for title, parser in _parsers():
        if f'id="{title.replace(" ", "-").replace("_", "-")}"' not in page:
            missing.append(title)
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
                continue
            if action.option_strings and not all(option in page for option in action.option_strings):
                missing.append(f"{title} {'/'.join(action.option_strings)}")
    assert not missing, f"not in the CLI reference: {missing}"


def test_architecture_page_is_architecture_md(built_site):
    page = (built_site / "architecture/index.html").read_text(encoding="utf-8")
    headings = re.findall(r"^#+ (.+)$", (REPO / "ARCHITECTURE.md").read_text(encoding="utf-8"), re.M)
    assert headings
    for heading in headings:
        assert heading.replace("&", "&amp;") in page, heading


def test_api_reference_documents_the_public_api(built_site):
    page = (built_site / "reference/api/index.html").read_text(encoding="utf-8")
    for name in ("faceid.api.FaceID", "faceid.api.FaceID.enrol", "faceid.api.FaceID.identify",
                 "faceid.api.FaceID.verify", "faceid.api.FaceID.identify_video", "faceid.api.FaceID.forget",
                 "faceid.api.embed", "faceid.api.Face", "faceid.api.Verification", "faceid.api.Frame",
                 "faceid.errors.FaceIdError", "faceid.errors.NoFaceError"):
        assert f'id="{name}"' in page, name


def test_no_built_page_gives_line_counts(built_site):
    for html_page in built_site.rglob("*.html"):
        text = re.sub(r"<[^>]+>", "", html_page.read_text(encoding="utf-8"))
        assert not LINE_COUNT.search(text), f"{html_page.relative_to(built_site)}: {LINE_COUNT.search(text).group()}"


# --- (b) every Python example runs ---------------------------------------------------------------

PYTHON_PAGES = [page for page in DOC_PAGES
                if any(block["language"] == "python" and not block["skip"] for block in code_blocks(page))]

# The photos the examples name, from real LFW people: "alice" is Arminio Fraga (whose first photo has
# three faces: group.jpg), "bob" Bashar Assad; photo.jpg has three faces too.
EXAMPLE_PHOTOS = {
    "alice1.jpg": "Arminio_Fraga/Arminio_Fraga_0002.jpg",
    "alice2.jpg": "Arminio_Fraga/Arminio_Fraga_0003.jpg",
    "alice3.jpg": "Arminio_Fraga/Arminio_Fraga_0004.jpg",
    "a.jpg": "Arminio_Fraga/Arminio_Fraga_0005.jpg",
    "b.jpg": "Arminio_Fraga/Arminio_Fraga_0006.jpg",
    "group.jpg": "Arminio_Fraga/Arminio_Fraga_0001.jpg",
    "bob1.jpg": "Bashar_Assad/Bashar_Assad_0001.jpg",
    "bob2.jpg": "Bashar_Assad/Bashar_Assad_0003.jpg",
    "photo.jpg": "Billy_Crystal/Billy_Crystal_0005.jpg",
}

RUNNER = r"""
import json, sys, traceback
blocks = json.load(open(sys.argv[1], encoding="utf-8"))
namespace = {"__name__": "__main__"}
for block in blocks:
    print(f"--- {block['where']}", flush=True)
    try:
        exec(compile(block["code"], block["where"], "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        print(f"FAILED: the example at {block['where']}", file=sys.stderr, flush=True)
        sys.exit(1)
"""


def _example_env() -> dict:
    env = {key: value for key, value in os.environ.items() if key != "FACEID_KEY"}
    return {**env, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture(scope="module")
def examples_folder(tmp_path_factory) -> Path:
    """A folder holding everything the examples name: photos, faces/, an extractor and its cache, a key."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("examples")
    for name, source in EXAMPLE_PHOTOS.items():
        shutil.copy2(LFW / source, folder / name)
    for person, photos in (("alice", ["alice1.jpg", "alice2.jpg", "alice3.jpg"]), ("bob", ["bob1.jpg", "bob2.jpg"])):
        (folder / "faces" / person).mkdir(parents=True)
        for photo in photos:
            shutil.copy2(folder / photo, folder / "faces" / person / photo)
    # The top of a photo: hair and background, no face.
    Image.open(folder / "alice1.jpg").crop((0, 0, 250, 60)).save(folder / "no_face.jpg")
    shutil.copy2(KNOWN / "lin-manuel-miranda" / "lin-manuel-miranda.png", folder / "lin-manuel-miranda.png")
    (folder / "hamilton_clip.mp4").symlink_to(VIDEO)
    for script, *args in (
        ("network.py", "--backbone", "dlib", "--output", "models/extractor"),
        ("extract_features.py", "--faces_path", "faces", "--model_path", "models/extractor",
         "--features", "script_features", "--workers", "0", "-q"),
        ("keys.py", "new", "--output", "faceid.key"),
    ):
        result = run_process([sys.executable, str(REPO / script), *args], cwd=folder, env=_example_env())
        assert result.returncode == 0, f"{script} {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return folder


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=page_name)
def test_python_examples_run(page, examples_folder, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(examples_folder, work, symlinks=True)
    blocks = [{"code": block["code"], "where": f"{page_name(page)}:{block['line']}"}
              for block in code_blocks(page) if block["language"] == "python" and not block["skip"]]
    (tmp_path / "blocks.json").write_text(json.dumps(blocks), encoding="utf-8")
    result = run_process([sys.executable, "-c", RUNNER, str(tmp_path / "blocks.json")], cwd=work,
                         env=_example_env(), what=f"the Python examples of {page_name(page)}")
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"


def test_skipped_examples_are_few_and_say_why():
    skipped = [(page_name(page), block["line"]) for page in DOC_PAGES for block in code_blocks(page)
               if block["language"] == "python" and block["skip"]]
    assert len(skipped) <= 3, skipped
    for page in DOC_PAGES:
        for line in page.read_text(encoding="utf-8").splitlines():
            if line.strip().startswith(SKIP_MARKER):
                assert re.match(r"<!-- docs-test: skip \(.+\) -->$", line.strip()), f"{page_name(page)}: {line}"


# --- (c) every command line of ours parses ------------------------------------------------------

SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}


def _run_sh_commands() -> set[str]:
    """The commands ./run.sh accepts: the arms of its case statement."""
    text = (REPO / "run.sh").read_text(encoding="utf-8")
    case = text[text.index('case "${1:-}" in'):]
    return {arm for arm in re.findall(r"^\s*([\w-]+)\)", case, re.M)}


def command_lines(page: Path) -> list[tuple[int, str]]:
    """``(line, command)`` for every shell command in the page's bash/sh/console blocks."""
    commands = []
    for block in code_blocks(page):
        if block["language"] not in SHELL_LANGUAGES:
            continue
        pending, first = "", None
        for offset, line in enumerate(block["code"].splitlines()):
            if block["language"] == "console":
                if not line.startswith("$ ") and not pending:
                    continue
                line = line[2:] if line.startswith("$ ") else line
            if not line.strip() and not pending:
                continue
            first = first if pending else block["line"] + offset
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            commands.append((first, pending + line))
            pending = ""
    return commands


def _our_command(words: list[str]):
    """``(module, args)`` when the words call one of our scripts, ``("run.sh", [arm])`` for ./run.sh, else None."""
    from faceid.cli.main import SUBCOMMANDS, find_subcommand

    while words and re.match(r"^[A-Za-z_]\w*=", words[0]):  # FACEID_DATA=... ./run.sh demo
        words = words[1:]
    if not words:
        return None
    scripts = {command.script: command.module for command in SUBCOMMANDS}
    program = Path(words[0]).name
    if re.fullmatch(r"python(3(\.\d+)?)?", program) and len(words) > 1 and Path(words[1]).name in scripts:
        return scripts[Path(words[1]).name], words[2:]
    if program == "faceid" and len(words) > 1 and not words[1].startswith("-"):
        command = find_subcommand(words[1])
        return (command.module if command else f"unknown faceid command {words[1]!r}"), words[2:]
    if program == "run.sh":
        return "run.sh", words[1:2]
    return None


def _no_abbreviations(parser: argparse.ArgumentParser) -> None:
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _no_abbreviations(sub)


def _parse_error(module: str, args: list[str]) -> str | None:
    if module == "run.sh":
        return None if args and args[0] in _run_sh_commands() else f"./run.sh has no command {args}"
    if module.startswith("unknown"):
        return module
    script = importlib.import_module(f"faceid.cli.{module}")
    leading = getattr(script, "LEADING_PARSERS", {})
    if args[:1] and args[0] in leading:  # faceid serve token create ...
        parser, args = leading[args[0]](), args[1:]
    else:
        parser = script.build_parser()
    _no_abbreviations(parser)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(args)
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            return stderr.getvalue().strip().splitlines()[-1]
    return None


SHELL_PAGES = [page for page in DOC_PAGES if any(block["language"] in SHELL_LANGUAGES for block in code_blocks(page))]


@pytest.mark.parametrize("page", SHELL_PAGES, ids=page_name)
def test_documented_commands_parse(page):
    failures, checked = [], 0
    for line, command in command_lines(page):
        ours = _our_command(shlex.split(command, comments=True))
        if ours is None:
            continue
        checked += 1
        error = _parse_error(*ours)
        if error:
            failures.append(f"{page_name(page)}:{line}: {command.strip()}\n    {error}")
    assert not failures, "\n".join(failures)


def test_the_command_checker_catches_a_renamed_flag():
    assert _parse_error("extract_features", ["--faces_path", "faces/", "--features", "features/"]) is None
    assert "unrecognized arguments: --feature_dir" in _parse_error("extract_features",
                                                                   ["--faces_path", "faces/", "--feature_dir", "f/"])
    assert _parse_error("extract_features", ["--faces_path", "faces/", "--featu", "f/"])  # no abbreviations
    assert _our_command(["python", "test.py", "--no_display"]) == ("identify", ["--no_display"])
    assert _our_command(["faceid", "extract", "--rebuild"]) == ("extract_features", ["--rebuild"])
    assert _parse_error("run.sh", ["demo"]) is None and _parse_error("run.sh", ["deploy"])


# --- (d) README is short, and nothing counts lines ------------------------------------------------

def test_readme_is_short():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"


@pytest.mark.parametrize("page", DOC_PAGES, ids=page_name)
def test_no_page_gives_line_counts(page):
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        assert not LINE_COUNT.search(line), f"{page_name(page)}:{number}: {line.strip()}"


# --- (e) README's own CLI path, run for real on files -----------------------------------------------

def _needs_a_camera(module: str, args: list[str]) -> bool:
    """capture.py and test.py read the webcam unless given a video or a folder of images."""
    return module in ("capture", "identify") and not {"--video_path", "--images"} & set(args)


def test_readme_commands_run_on_files(tmp_path):
    """Every `python <script>.py` line of README runs, in README's order, in a folder laid out as README
    assumes (faces/<person>/, alice.mp4 and clip.mp4 are the Hamilton clip); only the lines that open the
    webcam are left out (they are parsed above), their result laid out by hand: two people's photos."""
    for person, lfw_person in (("alice", "Arminio_Fraga"), ("bob", "Bashar_Assad")):
        (tmp_path / "faces" / person).mkdir(parents=True)
        for photo in sorted((LFW / lfw_person).iterdir())[:3]:
            shutil.copy2(photo, tmp_path / "faces" / person / photo.name)
    for name in ("alice.mp4", "clip.mp4"):
        (tmp_path / name).symlink_to(VIDEO)
    ran, left_out = [], []
    for line, command in command_lines(REPO / "README.md"):
        words = shlex.split(command, comments=True)
        ours = _our_command(words)
        if ours is None or ours[0] == "run.sh" or Path(words[0]).name == "faceid":
            continue
        if _needs_a_camera(*ours):
            left_out.append(line)
            continue
        argv = [sys.executable, str(REPO / Path(words[1]).name), *words[2:]]
        result = run_process(argv, cwd=tmp_path, env=_example_env(), what=f"README.md:{line}: {command.strip()}")
        assert result.returncode == 0, f"README.md:{line}: {command.strip()}\n{result.stdout}\n{result.stderr}"
        ran.append(ours[0])
    # the newcomer's path ran whole: extractor, cache, a capture from a video, identification of a video
    assert {"check_faces", "network", "extract_features", "capture", "identify"} <= set(ran), ran
    assert len(left_out) <= 3, left_out
    records = [json.loads(row) for row in (tmp_path / "faces.jsonl").read_text().splitlines()]
    assert records and (tmp_path / "annotated.mp4").stat().st_size > 0
    assert len(list((tmp_path / "faces" / "alice").iterdir())) > 3  # capture.py added crops from alice.mp4
