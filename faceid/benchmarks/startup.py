"""Start-up cost of the commands: importing faceid, and test.py --help, against a bare interpreter.

Each case is a fresh interpreter (this one's, so run it with the venv you want to measure: the
core install or the full one), started ``--repeats`` times, the cases alternating, after one
round to warm the file cache; the median wall time is reported. The baseline is
``python -c pass`` in the same run, the ratio is case / baseline. Where TensorFlow is installed,
``import tensorflow`` is timed too: what every identification command would pay if it imported it.
Also checks, once, that importing test.py's module imports no TensorFlow or Keras.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from faceid.benchmarks.common import REPO, print_json_lines, print_table
from faceid.extras import is_installed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=10, help="starts of each case, alternating (median reported)")


def _cases() -> dict[str, list[str]]:
    cases = {
        "python -c pass (baseline)": ["-c", "pass"],
        "import faceid": ["-c", "import faceid"],
        "import faceid.cli.identify (test.py's module)": ["-c", "import faceid.cli.identify"],
        "faceid --help": ["-m", "faceid", "--help"],
        "faceid identify --help": ["-m", "faceid", "identify", "--help"],
    }
    if (REPO / "test.py").is_file():  # a clone; an installed wheel has no root scripts
        cases["python test.py --help"] = [str(REPO / "test.py"), "--help"]
    if is_installed("tensorflow"):
        cases["import tensorflow (reference)"] = ["-c", "import tensorflow"]
    return cases


def _start(arguments: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *arguments], cwd=REPO, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def run(args: argparse.Namespace) -> int:
    cases = _cases()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for repeat in range(args.repeats + 1):
        for name, arguments in cases.items():
            seconds = _start(arguments)
            if repeat:  # the first round only warms the file cache
                samples[name].append(seconds)
    code = ("import json, sys, faceid.cli.identify; "
            "print(json.dumps(sorted({'tensorflow', 'keras', 'tf2onnx'} & set(sys.modules))))")
    probe = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO, check=True, capture_output=True, text=True,
    )
    baseline = statistics.median(samples["python -c pass (baseline)"])
    rows = []
    for name, seconds in samples.items():
        median = statistics.median(seconds)
        rows.append({"bench": "startup", "case": name, "median_ms": round(median * 1000, 1), "minus_baseline_ms": round((median - baseline) * 1000, 1),
                     "ratio": round(median / baseline, 2), "runs": len(seconds)})
    print(f"interpreter: {sys.executable}; TensorFlow installed: {'yes' if is_installed('tensorflow') else 'no'}; "
          f"modules of TensorFlow/Keras imported by test.py's module: {probe.stdout.strip()}")
    print_table(rows, ["case", "median_ms", "minus_baseline_ms", "ratio", "runs"])
    print_json_lines([*rows, {"bench": "startup", "identify_imports": json.loads(probe.stdout)}])
    return 0
