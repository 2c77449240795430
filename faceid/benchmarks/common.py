"""Helpers every benchmark shares: latency statistics and a plain-text table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np


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
