"""Errors: one module defines them, the library names parameters (never flags), the scripts translate
them to their flags, and no message shows a Python object's representation."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

import faceid
import faceid.errors
from conftest import KNOWN, VIDEO
from faceid.cli import translate_message
from faceid.errors import FaceIdError, ImageReadError, InputError

PACKAGE = Path(faceid.__file__).parent
# The scripts' own modules: the one place flags may be named.
SCRIPT_PARTS = ("cli", "benchmarks")
FLAG = re.compile(r"(?<![\w-])--[a-z]")
# Flags of other programs a message may quote (pip's, in an install hint).
FOREIGN_FLAGS = ("--force-reinstall", "--no-deps")
LOG_METHODS = {"debug", "info", "warning", "warn", "error", "exception", "critical"}
# Functions whose string arguments end up in an error message (the purpose of a missing extra, a fix...).
MESSAGE_TAKERS = {"require", "require_all", "read_json", "load_npz", "check_file_sha256", "check_same_extractor",
                  "check_output_folder", "list_photos", "gallery_layout", "embed_gallery", "_files",
                  "saved_onnx_file", "load_calibrations"}


def _library_modules(root: Path = PACKAGE) -> list[Path]:
    return [path for path in sorted(root.rglob("*.py"))
            if path.relative_to(root).parts[0] not in SCRIPT_PARTS]


def _call_name(call: ast.Call) -> str:
    function = call.func
    return function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")


def _message_nodes(tree: ast.AST):
    """Statements and calls whose strings become what a user reads: raises, log calls, message takers."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise):
            yield node
        elif isinstance(node, ast.Call):
            name = _call_name(node)
            if (name in LOG_METHODS and isinstance(node.func, ast.Attribute)) or name in MESSAGE_TAKERS:
                yield node


def flags_in_messages(root: Path) -> list[str]:
    """``path:line: text`` of every string (or f-string part) in a library message that names a flag."""
    found = []
    for path in _library_modules(root):
        tree = ast.parse(path.read_text(), str(path))
        for node in _message_nodes(tree):
            for constant in ast.walk(node):
                if isinstance(constant, ast.Constant) and isinstance(constant.value, str):
                    text = constant.value
                    for foreign in FOREIGN_FLAGS:
                        text = text.replace(foreign, "")
                    if FLAG.search(text):
                        found.append(f"{path.relative_to(root.parent)}:{constant.lineno}: {constant.value!r}")
    return found


def exception_classes_outside_errors(root: Path) -> list[str]:
    """``path: Class`` of every exception class defined outside ``errors.py``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root) == Path("errors.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(base) for base in node.bases]
                if node.name.endswith(("Error", "Exception")) or any(
                    base.split(".")[-1].endswith(("Error", "Exception")) for base in bases
                ):
                    found.append(f"{path.relative_to(root.parent)}: {node.name}")
    return found


def _planted_package(tmp_path: Path, source: str) -> Path:
    root = tmp_path / "faceid"
    (root / "cli").mkdir(parents=True)
    (root / "errors.py").write_text("class FaceIdError(Exception):\n    pass\n")
    (root / "cli" / "tool.py").write_text('raise SystemExit("pass --flag here: the scripts may")\n')
    (root / "planted.py").write_text(source)
    return root


def test_no_library_message_names_a_flag():
    assert flags_in_messages(PACKAGE) == []


@pytest.mark.parametrize("source", [
    'raise ValueError("pass --threshold T")\n',
    'def f(x):\n    raise ValueError(f"unknown {x}: pass --scorer cosine")\n',
    'import logging\nlogging.getLogger(__name__).warning("%s: use --rebuild", 1)\n',
    'from faceid.extras import require\nrequire("ray", "--engine ray")\n',
])
def test_the_flag_check_finds_a_planted_flag(tmp_path, source):
    found = flags_in_messages(_planted_package(tmp_path, source))
    assert len(found) == 1 and found[0].startswith("faceid/planted.py:")  # not cli/tool.py


def test_the_flag_check_lets_parameters_and_pip_flags_through(tmp_path):
    source = ('raise ValueError("pass `threshold`; pip install --force-reinstall --no-deps opencv-python")\n'
              '"""A docstring may show --flags."""\n')
    assert flags_in_messages(_planted_package(tmp_path, source)) == []


def test_every_exception_class_is_defined_in_errors_py():
    assert exception_classes_outside_errors(PACKAGE) == []


def test_the_exception_class_check_finds_a_planted_class(tmp_path):
    root = _planted_package(tmp_path, "from faceid.errors import FaceIdError\n\n\nclass OddError(FaceIdError):\n    pass\n")
    assert exception_classes_outside_errors(root) == ["faceid/planted.py: OddError"]


def test_every_error_class_says_when_it_is_raised():
    classes = [value for value in vars(faceid.errors).values()
               if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == "faceid.errors"]
    assert len(classes) >= 15
    assert all(issubclass(cls, FaceIdError) for cls in classes)
    assert [cls.__name__ for cls in classes if not (cls.__doc__ or "").strip()] == []


def test_errors_moved_to_errors_py_keep_their_old_import_places():
    from faceid.extras import MissingExtraError
    from faceid.io.sealed import KeyRequiredError, PlaintextFileError, SealError, TamperedFileError, WrongKeyError
    from faceid.nets.dlib_format import DlibModelError

    assert KeyRequiredError is faceid.errors.KeyRequiredError and issubclass(KeyRequiredError, SealError)
    assert issubclass(SealError, InputError) and issubclass(DlibModelError, InputError)
    assert all(getattr(faceid.errors, cls.__name__) is cls for cls in (WrongKeyError, TamperedFileError, PlaintextFileError))
    assert MissingExtraError is faceid.errors.MissingExtraError


def test_a_library_error_names_the_parameter():
    from faceid.backbones import BackboneOptions, create_extractor

    with pytest.raises(InputError) as error:
        create_extractor("dlib", BackboneOptions(tta="mirror"))
    assert "unknown `tta` 'mirror'" in str(error.value) and "--" not in str(error.value)


def test_translation_turns_parameters_into_the_scripts_flags():
    from faceid.cli.identify import build_parser

    message = "pass `classification`, `key`, `features` or `output_path`; `not_an_option` stays a word"
    assert translate_message(message, build_parser()) == (
        "pass --classification, --key_file, --features or --output; not_an_option stays a word"
    )
    assert translate_message(message) == "pass classification, key, features or output_path; not_an_option stays a word"


def test_translation_uses_a_scripts_own_alias_and_sub_command_options():
    from faceid.cli.evaluate import build_parser as evaluate_parser
    from faceid.cli.keys import build_parser as keys_parser

    assert translate_message("`gallery_per_person` and `images_root`", evaluate_parser()) == (
        "--gallery_per_person and --images_root"
    )
    assert translate_message("pass `old`", keys_parser(), {"old": "key_file"}) == "pass --key_file"


def test_a_script_prints_the_flag_where_the_library_names_the_parameter(
    dlib_extractor, dlib_extractor_dir, tmp_path, capsys, monkeypatch
):
    from faceid.cli import identify as identify_script
    from faceid.features.extract import extract_features
    from faceid.match.fitting import GalleryOptions, fit_gallery

    features = tmp_path / "features"
    extract_features(KNOWN, dlib_extractor, features, progress=False)
    with pytest.raises(InputError) as error:  # the library: no similarity model for the head scorer
        fit_gallery(np.zeros((2, 128), np.float32), ["a", "b"], dlib_extractor.manifest, dlib_extractor_dir,
                    GalleryOptions(scorer="head", default_model=None))
    assert "`classification`" in str(error.value) and "--classification" not in str(error.value)

    monkeypatch.chdir(tmp_path)  # no default similarity model (models/similarity) to fall back on
    code = identify_script.main(["--video_path", str(VIDEO), "--features", str(features), "--model",
                                 str(dlib_extractor_dir), "--scorer", "head", "--no_display", "-q"])
    line = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(line) == 1
    assert "--classification" in line[0] and "--scorer" in line[0] and "`" not in line[0]


def test_a_scripts_warnings_name_flags_too(capsys):
    import logging

    from faceid.cli import setup_script
    from faceid.cli.identify import build_parser

    parser = build_parser()
    setup_script(parser.parse_args(["--video_path", "clip.mp4"]), parser)
    logging.getLogger("faceid.test").warning("lower `top_k`")
    assert "WARNING: lower --top_k" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"not an image at all, just text", b""])
def test_an_unreadable_image_is_named_by_its_path(tmp_path, content):
    from faceid.io.images import read_image

    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageReadError) as error:
        read_image(path)
    message = str(error.value)
    assert message.startswith(f"{path}: not a readable image") and "object at 0x" not in message
    assert "BytesIO" not in message


def test_undecodable_image_bytes_are_named_as_such():
    from faceid.io.images import decode_image

    with pytest.raises(ImageReadError) as error:
        decode_image(b"\x89PNG\r\n\x1a\n truncated")
    assert str(error.value).startswith("image bytes: not a readable image") and "0x" not in str(error.value)
