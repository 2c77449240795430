"""Optional dependencies: which pip extra brings each one, and one way to ask for it.

The core install (``pip install faceid``) enrols, extracts, identifies, evaluates and retrieves
with the dlib backbone on ONNX Runtime. Everything else comes with an extra, declared in
``pyproject.toml``: ``[train]`` (TensorFlow/Keras), ``[cluster]`` (scikit-learn: the baseline clustering methods), ``[search]`` (FAISS), ``[plots]``
(Matplotlib), ``[gui]`` (OpenCV with windows), ``[ray]`` (extraction on a Ray cluster), ``[serve]``
(``faceid serve``: FastAPI, uvicorn, python-multipart, paho-mqtt, prometheus-client). Code that needs one of those modules imports it
through :func:`require`, so a missing extra is an ``error:`` that names the extra to install, not
a ``ModuleNotFoundError`` traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from faceid.errors import MissingExtraError  # defined in errors.py; importable from here too

# Import name -> the extra that installs it (pyproject.toml's [project.optional-dependencies]).
EXTRA_OF_MODULE = {
    "tensorflow": "train",
    "keras": "train",
    "h5py": "train",
    "tf2onnx": "train",
    "sklearn": "cluster",
    "faiss": "search",
    "matplotlib": "plots",
    "ray": "ray",
    "fastapi": "serve",
    "uvicorn": "serve",
    "python_multipart": "serve",  # python-multipart's import name since 0.0.13
    "multipart": "serve",  # ... and before (still there as a shim)
    "paho": "serve",
    "prometheus_client": "serve",
}


def install_hint(extra: str) -> str:
    """The command that installs ``extra``, for a pip install and for a clone."""
    return f'pip install "faceid[{extra}]" (in a clone: ./run.sh setup, or pip install -e ".[{extra}]")'


def is_installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (``sys.modules[name] = None`` counts as absent)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module``, an optional dependency, for ``purpose`` (e.g. ``"train.py"``).

    Raises:
        MissingExtraError: the module is not installed; the message names the extra to install.
    """
    package = module.split(".")[0]
    if not is_installed(package):
        extra = EXTRA_OF_MODULE[package]
        raise MissingExtraError(f"{purpose} needs {module}, which the core install leaves out: {install_hint(extra)}")
    return importlib.import_module(module)


def require_all(modules: tuple[str, ...], purpose: str) -> None:
    """Check that ``modules`` are installed, before a command starts long work (imports nothing).

    Raises:
        MissingExtraError: one or more are missing; the message names them and their extra.
    """
    missing = [module for module in modules if not is_installed(module)]
    if missing:
        extras = sorted({EXTRA_OF_MODULE[module] for module in missing})
        raise MissingExtraError(f"{purpose} needs {', '.join(missing)}, which the core install leaves out: "
                                + "; ".join(install_hint(extra) for extra in extras))
