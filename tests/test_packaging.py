"""pip install faceid: the ``faceid`` command, the extras, and identification without TensorFlow.

Two ways to check that the core install needs none of the extras: a subprocess where every
extra's modules are made unimportable (``sys.modules[name] = None``, as if not installed) runs
the identification path in-process, and a fresh venv gets the wheel that ``python -m build``
makes, with no extras, and runs the root scripts on the clip.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from conftest import KNOWN, REPO, VIDEO, copy_people, run_process

import faceid
from faceid.cli import main as faceid_command
from faceid.extras import EXTRA_OF_MODULE, MissingExtraError, require, require_all

EXTRAS_MODULES = sorted(EXTRA_OF_MODULE)


def extras_imported_code() -> str:
    """Python that prints, as JSON, which extras' modules (or their submodules) this process imported."""
    return (f"print(json.dumps(sorted({{m.split('.')[0] for m, v in sys.modules.items() if v is not None}} "
            f"& set({EXTRAS_MODULES!r}))))")


def run_without_extras(body: str) -> subprocess.CompletedProcess:
    """Run ``body`` in a fresh interpreter in which no extra is installed (their imports fail)."""
    code = ("import json, sys\n"
            f"for name in {EXTRAS_MODULES!r}: sys.modules[name] = None\n" + body)
    return run_process([sys.executable, "-c", code], what="python -c (no extra installed)", cwd=REPO)


# --- the faceid command -----------------------------------------------------------------


def test_help_lists_every_subcommand_with_its_scripts_first_docstring_line(capsys):
    assert faceid_command.main(["--help"]) == 0
    listing = capsys.readouterr().out
    for command in faceid_command.SUBCOMMANDS:
        module = importlib.import_module(f"faceid.cli.{command.module}")
        first_line = module.__doc__.strip().splitlines()[0].rstrip(".")
        line = next(line for line in listing.splitlines() if line.strip().startswith(command.name + " "))
        assert first_line in line and f"({command.script})" in line


def test_every_root_script_has_a_subcommand_running_the_same_main():
    shims = {}
    for script in sorted(REPO.glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("faceid.cli."):
                shims[script.name] = node.module.removeprefix("faceid.cli.")
    assert len(shims) == 17, shims
    assert {(command.script, command.module) for command in faceid_command.SUBCOMMANDS} == set(shims.items())


@pytest.mark.parametrize("command", faceid_command.SUBCOMMANDS, ids=lambda command: command.name)
def test_a_subcommand_has_its_scripts_parser(command, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["faceid"])  # the command rewrites argv[0]; restored after
    with pytest.raises(SystemExit) as exited:
        faceid_command.main([command.name, "--help"])
    assert exited.value.code == 0
    from_command = capsys.readouterr().out
    parser = importlib.import_module(f"faceid.cli.{command.module}").build_parser()
    parser.prog = f"faceid {command.name}"
    assert from_command == parser.format_help()


def test_aliases_and_a_typo(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["faceid"])
    with pytest.raises(SystemExit):
        faceid_command.main(["extract_features", "--help"])
    assert capsys.readouterr().out.startswith("usage: faceid extract ")
    assert faceid_command.main(["extrct"]) == 2
    assert "did you mean 'extract'?" in capsys.readouterr().err
    assert faceid_command.main([]) == 2  # no command: the listing, on stderr
    assert "commands:" in capsys.readouterr().err


def test_version_is_the_packages(capsys):
    assert faceid_command.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"faceid {faceid.__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", faceid.__version__)


def test_a_subcommand_runs_the_scripts_code_and_exit_code(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["faceid"])
    assert faceid_command.main(["compute-mean", "--features_path", str(tmp_path / "missing")]) == 1
    assert "error:" in capsys.readouterr().err and not (tmp_path / "missing").exists()


# --- the extras -------------------------------------------------------------------------


def test_importing_every_module_of_the_core_imports_no_extra():
    """Every module of the package but dlib_keras (a Keras model: [train] by nature) imports bare."""
    body = (
        "import pkgutil, importlib, faceid\n"
        "for info in pkgutil.walk_packages(faceid.__path__, 'faceid.'):\n"
        "    if info.name not in ('faceid.nets.dlib_keras', 'faceid.__main__'):\n"
        "        importlib.import_module(info.name)\n" + extras_imported_code()
    )
    done = run_process([sys.executable, "-c", "import json, sys\n" + body], what="importing every module", cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_identification_path_runs_with_no_extra_installed(tmp_path, lfw_cache_dir, trained_model_dir):
    """network (dlib) -> extract -> test.py (euclidean, and the head train.py trained) -> evaluate, bare."""
    known = tmp_path / "known"
    copy_people(KNOWN, known, sorted(p.name for p in KNOWN.iterdir()))
    work = tmp_path / "work"
    clip = ["--video_path", str(VIDEO), "--no_display", "--max_frames", "60", "-q", "--json"]
    body = f"""
from faceid.cli import network, extract_features, identify, evaluate
work = {str(work)!r}
codes = [
    network.main(["--backbone", "dlib", "--output", work + "/extractor", "-q"]),
    extract_features.main(["--faces_path", {str(known)!r}, "--model_path", work + "/extractor",
                           "--features", work + "/known", "-q"]),
    identify.main(["--features", work + "/known", "--model", work + "/extractor", "--scorer", "euclidean",
                   "--jsonl", work + "/euclidean.jsonl", *{clip!r}]),
    # HOG for the head: this session's head (8 epochs, 32 LFW people) names Lacamoire's profile, which
    # only BlazeFace finds, Miranda in a few frames; the demo's head (all of LFW DevTrain) names nobody
    # wrongly with any scorer (docs/results.md, docs/limits.md). Here the point is the bare install.
    identify.main(["--features", work + "/known", "--model", work + "/extractor",
                   "--classification", {str(trained_model_dir)!r}, "--scorer", "head", "--detector", "hog",
                   "--jsonl", work + "/head.jsonl", *{clip!r}]),
    evaluate.main(["openset", "--features", {str(lfw_cache_dir)!r}, "--folds", "2", "--gallery_sizes", "10", "-q"]),
]
print(json.dumps(codes))
""" + extras_imported_code()
    done = run_without_extras(body)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert json.loads(lines[-2]) == [0, 0, 0, 0, 0], done.stderr
    assert json.loads(lines[-1]) == []
    for scorer in ("euclidean", "head"):
        faces = [json.loads(line) for line in (work / f"{scorer}.jsonl").read_text().splitlines()]
        # The first 60 frames (the clip's truth): Miranda's far shot (0-19), with Lacamoire small at the piano,
        # then Lacamoire's profile (20-59); BlazeFace, the live default, finds both of Lacamoire's faces.
        # Observed: Miranda named in frames 1-19 (frame 0 is still being voted on, "…"), only there and once
        # a frame; Lacamoire named alex-lacamoire or unknown, as is a box on Miranda's hand (frames 6-11).
        miranda_frames = [face["frame"] for face in faces if face["name"] == "lin-manuel-miranda"]
        assert len(set(miranda_frames)) >= 15 and len(miranda_frames) == len(set(miranda_frames)), (scorer, faces)
        assert max(miranda_frames) < 20, (scorer, faces)
        names = {face["name"] for face in faces}
        assert names <= {"lin-manuel-miranda", "alex-lacamoire", "unknown", "…"}, (scorer, names)


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["train.py", "--features_path", "{cache}", "--output_model", "{tmp}/model"], "train"),
        (["network.py", "--backbone", "resnet50", "--weights", "none", "--output", "{tmp}/resnet"], "train"),
        (["evaluate.py", "identify", "--faces_path", "{faces}", "--model_path", "{extractor}", "--features",
          "{cache}", "--plots", "{tmp}/plots", "-q"], "plots"),
    ],
    ids=["train.py", "resnet50", "evaluate-plots"],
)
def test_a_command_needing_a_missing_extra_names_the_extra(argv, extra, tmp_path, lfw_train_faces, lfw_cache_dir,
                                                           dlib_extractor_dir):
    values = {"cache": lfw_cache_dir, "tmp": tmp_path, "faces": lfw_train_faces, "extractor": dlib_extractor_dir}
    argv = [part.format(**values) for part in argv]
    body = (f"import runpy\nsys.argv = {argv!r}\n"
            f"runpy.run_path({str(REPO / argv[0])!r}, run_name='__main__')\n")
    done = run_without_extras(body)
    assert done.returncode == 1, done.stderr
    assert f'pip install "faceid[{extra}]"' in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "model").exists() and not (tmp_path / "resnet").exists()


def test_require_imports_what_is_installed_and_names_the_extra_of_what_is_not(monkeypatch):
    assert require("faiss", "the shortlist").__name__ == "faiss"  # installed here (the dev extra)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtraError, match=r'evaluation plots needs matplotlib.*pip install "faceid\[plots\]"'):
        require("matplotlib", "evaluation plots")
    monkeypatch.setitem(sys.modules, "keras", None)
    with pytest.raises(MissingExtraError, match=r'needs keras, .*"faceid\[train\]"'):
        require_all(("tensorflow", "keras"), "training")


# --- OpenCV with and without windows ----------------------------------------------------


def test_headless_opencv_on_a_desktop_says_which_build_to_install(tmp_path, capsys, monkeypatch,
                                                                  dlib_extractor_dir):
    from faceid.cli import capture, extract_features, identify

    monkeypatch.setenv("DISPLAY", ":0")  # a desktop, as far as test.py can tell
    monkeypatch.setattr("faceid.io.display._gui_backend", lambda: "")  # OpenCV's headless build
    features = tmp_path / "known"
    assert extract_features.main(["--faces_path", str(KNOWN), "--model_path", str(dlib_extractor_dir),
                                  "--features", str(features), "-q"]) == 0
    common = ["--features", str(features), "--model", str(dlib_extractor_dir), "--scorer", "euclidean",
              "--video_path", str(VIDEO), "--max_frames", "5", "-q"]
    assert identify.main(common) == 0  # runs on without a window, and says why
    err = capsys.readouterr().err
    assert "headless build" in err and 'pip install "faceid[gui]"' in err
    assert identify.main([*common, "--no_display"]) == 0
    assert "faceid[gui]" not in capsys.readouterr().err
    # capture.py without --auto needs a window for its s key: an error naming the fix
    assert capture.main(["--video_path", str(VIDEO), "--output", str(tmp_path / "faces" / "someone")]) == 1
    err = capsys.readouterr().err
    assert 'pip install "faceid[gui]"' in err and "--auto" in err
    assert not (tmp_path / "faces").exists()


# --- a wheel, installed in a fresh venv with the core only ---------------------------------


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory) -> Path:
    """A fresh venv with the wheel ``python -m build`` makes of this tree, no extras."""
    root = tmp_path_factory.mktemp("core_venv")
    built = run_process([sys.executable, "-m", "build", "--outdir", str(root / "dist"), str(REPO)])
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheels = list((root / "dist").glob("faceid-*.whl"))
    assert len(wheels) == 1 and list((root / "dist").glob("faceid-*.tar.gz"))
    venv.EnvBuilder(with_pip=True).create(root / "venv")
    python = root / "venv" / "bin" / "python"
    installed = run_process([str(python), "-m", "pip", "install", "--quiet", str(wheels[0])])
    assert installed.returncode == 0, installed.stderr[-3000:]
    return root / "venv"


def venv_run(core_venv: Path, argv: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return run_process(argv, cwd=cwd, env=environment)


def test_the_core_wheel_installs_no_extra(core_venv):
    listed = venv_run(core_venv, [str(core_venv / "bin" / "python"), "-m", "pip", "list", "--format", "json"])
    # PEP 503 normalisation: pip lists some names with "_" (tensorflow_cpu), others with "-"
    names = {re.sub(r"[-_.]+", "-", package["name"]).lower() for package in json.loads(listed.stdout)}
    assert {"faceid", "dlib-bin", "onnxruntime", "opencv-python-headless", "cryptography"} <= names
    assert "tflite" in names  # the .tflite reader: a FlatBuffer schema, no TensorFlow
    assert not names & {"tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "faiss-cpu", "matplotlib",
                        "scikit-learn", "h5py", "opencv-python", "ray", "pyarrow", "pandas"}


def test_the_installed_command_lists_its_subcommands_and_version(core_venv, tmp_path):
    helped = venv_run(core_venv, [str(core_venv / "bin" / "faceid"), "--help"], cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert all(f"  {command.name} " in helped.stdout for command in faceid_command.SUBCOMMANDS)
    version = venv_run(core_venv, [str(core_venv / "bin" / "faceid"), "--version"], cwd=tmp_path)
    assert version.stdout.strip() == f"faceid {faceid.__version__}"
    # the installed copy, not this tree, answered: the calibration file shipped as package data
    code = ("import faceid, pathlib; p = pathlib.Path(faceid.__file__).parent; "
            "print(p, len(list((p / 'match' / 'calibrations').glob('*.npz'))))")
    located = venv_run(core_venv, [str(core_venv / "bin" / "python"), "-c", code], cwd=tmp_path)
    where, calibrations = located.stdout.split()
    assert str(core_venv) in where and int(calibrations) >= 1
    # MediaPipe's BlazeFace files and their licence ship as package data too
    code = ("import faceid.detect.blazeface as b; print(b.MODELS_DIR); "
            "print(sorted(p.name for p in b.MODELS_DIR.iterdir())); print(b.model_path(b.MODELS['back']).name)")
    located = venv_run(core_venv, [str(core_venv / "bin" / "python"), "-c", code], cwd=tmp_path)
    assert located.returncode == 0, located.stderr
    folder, files, checked = located.stdout.splitlines()
    assert str(core_venv) in folder and checked == "face_detection_back.tflite"
    assert "LICENSE" in files and "face_detection_short_range.tflite" in files
    # the web page's files too: the service serves them from the installed package (no CDN)
    code = ("import faceid.service.web as w; print(w.WEB_DIR); print(sorted(p.name for p in w.WEB_DIR.iterdir())); "
            "print(w.static_file('app.js')[1])")
    located = venv_run(core_venv, [str(core_venv / "bin" / "python"), "-c", code], cwd=tmp_path)
    assert located.returncode == 0, located.stderr
    folder, files, media_type = located.stdout.splitlines()
    assert str(core_venv) in folder and media_type.startswith("text/javascript")
    assert all(name in files for name in ("signin.html", "app.html", "app.js", "app.css", "icon.svg")), files


def test_the_root_scripts_identify_the_clip_in_the_core_venv(core_venv, tmp_path):
    python = str(core_venv / "bin" / "python")
    steps = [
        # no --backbone: dlib, the default, which the core install runs (no TensorFlow)
        [python, "network.py", "--output", str(tmp_path / "extractor")],
        # --detector blazeface (the default, named): MediaPipe's model shipped in the wheel, read and
        # run as an ONNX graph by the core install, no TensorFlow
        [python, "extract_features.py", "--faces_path", str(KNOWN), "--model_path", str(tmp_path / "extractor"),
         "--features", str(tmp_path / "known"), "--detector", "blazeface"],
        [python, "test.py", "--features", str(tmp_path / "known"), "--model", str(tmp_path / "extractor"),
         "--scorer", "euclidean", "--video_path", str(VIDEO), "--no_display", "--max_frames", "60",
         "--jsonl", str(tmp_path / "script.jsonl"), "--detector", "blazeface"],
        # the installed command, from elsewhere, on the same clip: the same faces and names
        [str(core_venv / "bin" / "faceid"), "identify", "--features", str(tmp_path / "known"), "--model",
         str(tmp_path / "extractor"), "--scorer", "euclidean", "--video_path", str(VIDEO), "--no_display",
         "--max_frames", "60", "--jsonl", str(tmp_path / "command.jsonl"), "--detector", "blazeface"],
    ]
    for step in steps:
        done = venv_run(core_venv, step, cwd=REPO if step[0] == python else tmp_path)
        assert done.returncode == 0, (step, done.stderr)
    faces = [json.loads(line) for line in (tmp_path / "script.jsonl").read_text().splitlines()]
    assert sum(face["name"] == "lin-manuel-miranda" for face in faces) >= 15
    # BlazeFace, not HOG, found them: Lacamoire's profile (frames 20-59), which HOG never finds.
    assert sum(20 <= face["frame"] < 60 and face["box"][2] >= 100 for face in faces) >= 10
    by_command = [json.loads(line) for line in (tmp_path / "command.jsonl").read_text().splitlines()]
    assert [(face["frame"], face["name"]) for face in by_command] == [(face["frame"], face["name"]) for face in faces]
    # The Python API of the installed copy reads the same cache and names the same person.
    code = ("import faceid, sys; fid = faceid.FaceID(model=sys.argv[1], features=sys.argv[2]); "
            "print(fid.people); print([face.name for face in fid.identify(sys.argv[3])]); "
            "print(faceid.embed(sys.argv[3]).shape)")
    photo = KNOWN / "lin-manuel-miranda" / "lin-manuel-miranda.png"
    api = venv_run(core_venv, [python, "-c", code, str(tmp_path / "extractor"), str(tmp_path / "known"), str(photo)],
                   cwd=tmp_path)
    assert api.returncode == 0, api.stderr
    assert api.stdout.splitlines() == ["['alex-lacamoire', 'lin-manuel-miranda']", "['lin-manuel-miranda']", "(1, 128)"]
    trained = venv_run(core_venv, [python, "train.py", "--features_path", str(tmp_path / "known"),
                                   "--output_model", str(tmp_path / "model")])
    assert trained.returncode == 1 and 'pip install "faceid[train]"' in trained.stderr
