"""Helpers every benchmark shares: where the data is, the machine's rates, latency statistics, tables."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def shared_data() -> Path:
    """The shared face data: ``$FACEID_DATA`` (as for ./run.sh and the tests), else ``../shared/data``."""
    return Path(os.environ.get("FACEID_DATA", REPO.parent / "shared" / "data"))


# Hand-made truth (shots and who is in them) for the videos we ship benchmarks for.
TRUTH_FILES = {"hamilton_clip.mp4": Path(__file__).with_name("hamilton_clip_truth.json")}


def load_truth(video: Path, path: Path | None = None) -> dict[str, Any] | None:
    """The shots of ``video``: from ``path`` when given, else the built-in truth for it, else ``None``."""
    path = path or TRUTH_FILES.get(video.name)
    return None if path is None else json.loads(Path(path).read_text())


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def matmul_gflops(engine: str = "onnxruntime", size: int = 1024, repeats: int = 10, threads: int | None = None) -> float:
    """This machine's float32 matrix-multiply rate (best of ``repeats``): the one probe of the benchmarks.

    A computation's "physical floor" is its FLOPs over this rate, measured with the engine
    that runs it: ``"onnxruntime"`` for the backbones (NumPy's BLAS may be pinned to a
    conservative kernel on some machines, OPENBLAS_CORETYPE, and would understate it),
    ``"numpy"`` for the similarity head and the gallery scan, which run in NumPy.
    """
    if engine == "numpy":
        rng = np.random.default_rng(0)
        a, b = rng.standard_normal((size, size), dtype=np.float32), rng.standard_normal((size, size), dtype=np.float32)
        a @ b
        best = min(_timed(lambda: a @ b) for _ in range(repeats))
        return 2.0 * size**3 / best / 1e9
    if engine != "onnxruntime":
        raise ValueError(f"unknown engine {engine!r}: onnxruntime or numpy")
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "matmul",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [size, size]) for name in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = min(model.ir_version, onnx.IR_VERSION)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    inputs = {name: rng.standard_normal((size, size), dtype=np.float32) for name in ("a", "b")}
    session.run(None, inputs)
    best = min(_timed(lambda: session.run(None, inputs)) for _ in range(repeats))
    return 2.0 * size**3 / best / 1e9


def memory_gbps(megabytes: int = 512, repeats: int = 3) -> float:
    """Read bandwidth: a float32 dot product over an array much larger than the caches."""
    array = np.ones(megabytes * 2**20 // 4, dtype=np.float32)
    best = min(_timed(lambda: array @ array) for _ in range(repeats))
    return array.nbytes / best / 1e9


def latency_stats(milliseconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/mean of per-item latencies, and the rates they imply."""
    values = np.asarray(milliseconds, dtype=np.float64)
    if len(values) == 0:
        return {"n": 0, "p50_ms": float("nan"), "p95_ms": float("nan"), "mean_ms": float("nan"),
                "per_s": float("nan"), "median_per_s": float("nan")}
    p50 = float(np.percentile(values, 50))
    return {
        "n": int(len(values)),
        "p50_ms": round(p50, 2),
        "p95_ms": round(float(np.percentile(values, 95)), 2),
        "mean_ms": round(float(values.mean()), 2),
        "per_s": round(1000.0 / float(values.mean()), 2),  # throughput: items / total time
        "median_per_s": round(1000.0 / p50, 2),  # the typical item's rate
    }


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Rows as an aligned text table on stdout."""
    cells = [[str(row.get(column, "")) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[index]) for line in cells)) for index, column in enumerate(columns)]
    print("  ".join(column.ljust(width) for column, width in zip(columns, widths)))
    for line in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)))


def print_json_lines(records: list[dict[str, Any]]) -> None:
    """The machine-readable results: one JSON object per line, last on stdout."""
    for record in records:
        print(json.dumps(record))
