"""What each install costs: time, disk and packages of the core and of each extra, in fresh venvs.

Builds the wheel of this tree (``python -m build``) unless ``--wheel`` names one, then for each of
``--extras`` (``core`` is the wheel with no extra) creates a fresh venv in a temporary folder and
times ``pip install --no-cache-dir`` of it: every package downloaded, every sdist built, as for a
new user. Size is the venv's size on disk minus that of an empty venv; the baseline is the core,
the ratio is the extra's time and size over the core's. Needs the package index pip is configured
with (network); removes its venvs when done.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

from faceid.benchmarks.common import REPO, print_json_lines, print_table
from faceid.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--extras", default="core,train,all",
                        help="comma-separated: core (no extra), train, search, plots, gui, ray, all, dev")
    parser.add_argument("--wheel", type=Path, help="the wheel to install (default: build one of this tree)")


def _folder_mb(folder: Path) -> float:
    total = sum(path.lstat().st_size for path in folder.rglob("*") if not path.is_symlink() and path.is_file())
    return total / 2**20


def _build_wheel(scratch: Path) -> Path:
    if not (REPO / "pyproject.toml").is_file():
        raise InputError("no source tree to build a wheel of: pass --wheel PATH")
    done = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(scratch), str(REPO)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise InputError(f"python -m build failed (pip install build?): {done.stderr.strip()[-500:]}")
    return next(scratch.glob("faceid-*.whl"))


def _install(wheel: Path, extra: str, folder: Path) -> dict:
    venv.EnvBuilder(with_pip=True).create(folder)
    empty_mb = _folder_mb(folder)
    python = folder / "bin" / "python"
    requirement = str(wheel) if extra == "core" else f"{wheel}[{extra}]"
    environment = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    started = time.perf_counter()
    done = subprocess.run([str(python), "-m", "pip", "install", "--no-cache-dir", "--quiet", requirement],
                          capture_output=True, text=True, check=False, env=environment)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise InputError(f"pip install {requirement} failed: {done.stderr.strip()[-500:]}")
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format", "json"], capture_output=True, text=True,
                            check=True, env=environment)
    # PEP 503 normalisation: pip lists some names with "_" (tensorflow_cpu), others with "-"
    names = {re.sub(r"[-_.]+", "-", package["name"]).lower() for package in json.loads(listed.stdout)}
    return {"bench": "install", "extra": extra, "seconds": round(seconds, 1),
            "added_mb": round(_folder_mb(folder) - empty_mb), "packages": len(names - {"pip", "setuptools"}),
            "tensorflow": bool(names & {"tensorflow", "tensorflow-cpu"})}


def run(args: argparse.Namespace) -> int:
    extras = [extra.strip() for extra in args.extras.split(",") if extra.strip()]
    if "core" not in extras:
        extras.insert(0, "core")  # the baseline
    with tempfile.TemporaryDirectory(prefix="faceid-install-") as scratch:
        scratch = Path(scratch)
        wheel = args.wheel or _build_wheel(scratch)
        rows = [_install(wheel, extra, scratch / f"venv-{extra}") for extra in extras]
    core = rows[0]
    for row in rows:
        row["time_ratio"] = round(row["seconds"] / core["seconds"], 2)
        row["size_ratio"] = round(row["added_mb"] / core["added_mb"], 2)
    print(f"wheel: {wheel.name}; python {sys.version.split()[0]}; pip install --no-cache-dir into a fresh venv each")
    print_table(rows, ["extra", "seconds", "added_mb", "packages", "tensorflow", "time_ratio", "size_ratio"])
    print_json_lines(rows)
    return 0
