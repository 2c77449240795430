"""The root scripts of the original design are thin shims over faceid.cli, and older artefacts still load."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import REPO, run_process

from faceid.match.model import SimilarityModel

SCRIPTS = ["network.py", "extract_features.py", "compute_mean.py", "train.py", "test.py", "capture.py",
           "selfies2face.py", "check_faces.py", "evaluate.py", "bench.py", "train_siamese.py", "retrieve.py",
           "photo2sketch.py", "keys.py", "forget.py", "cluster.py", "serve.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_root_script_runs_its_faceid_cli_module(script):
    done = run_process([sys.executable, script, "--help"], cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ") and f"usage: {script}" in done.stdout


def test_identification_needs_no_tensorflow_import():
    code = ("import sys; from faceid.cli import identify, extract_features, evaluate, check_faces, retrieve, photo2sketch, keys, forget; "
            "print('tensorflow' in sys.modules or 'keras' in sys.modules)")
    done = run_process([sys.executable, "-c", code], cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_a_model_saved_before_the_decision_object_still_loads(trained_model_dir, tmp_path):
    """head.json written before this layout had threshold/rule/target_far but no "decision"."""
    import shutil

    old = tmp_path / "old_model"
    shutil.copytree(trained_model_dir, old)
    manifest = json.loads((old / "head.json").read_text())
    decision = manifest.pop("decision")
    (old / "head.json").write_text(json.dumps(manifest))
    model = SimilarityModel.load(old)
    assert model.decision.threshold == decision["threshold"] and model.decision.comparison == ">="
    assert model.rule.name == decision["rule"]["name"] and model.target_far == decision["target_far"]
