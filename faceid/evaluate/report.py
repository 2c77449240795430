"""What evaluate.py shows: the results table, PNG plots and a one-page, self-contained HTML report.

Plots are drawn with matplotlib's Agg backend, imported only when a plot is asked for.
The HTML page embeds its plots as base64 PNGs, so it can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from faceid.evaluate.common import Evaluation
from faceid.extras import require
from faceid.io.store import atomic_path, write_json

# One colour per method, the same on every plot.
METHOD_COLOURS = {"euclidean": "#1f77b4", "cosine": "#2ca02c", "head": "#d62728", "head_per_fold": "#9467bd"}


# --------------------------------------------------------------------------------------
# Table (stdout and HTML)
# --------------------------------------------------------------------------------------


def _percent(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f}%"


def _number(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def result_table(evaluation: Evaluation) -> tuple[list[str], list[list[str]]]:
    """Column titles and one row per method, formatted for people."""
    summary = evaluation.summary
    methods: dict[str, dict[str, Any]] = summary["methods"]
    if summary["command"] == "pairs":
        targets = list(next(iter(methods.values()))["tar_at_far"])
        header = [
            "method",
            "accuracy",
            "balanced acc.",
            "AUC",
            "EER",
            *[f"TAR@FAR {t}" for t in targets],
            "threshold",
            "no face",
        ]
        rows = [
            [
                name,
                f"{_percent(m['accuracy'])} ± {_percent(m['accuracy_std'])}",
                f"{_percent(m['balanced_accuracy'])} ± {_percent(m['balanced_accuracy_std'])}",
                _number(m["auc"]),
                _percent(m["eer"]),
                *[_percent(m["tar_at_far"][t]) for t in targets],
                _number(m.get("distance_threshold", m["threshold"])) + (" (distance)" if name == "euclidean" else "")
                if m["threshold"] is not None
                else "— (one per fold)",
                _percent(m["no_face_share"]),
            ]
            for name, m in methods.items()
        ]
    elif summary["command"] == "identify":
        points = ("0.001", "0.01", "0.1")
        header = ["scorer", "rank-1", "rank-5", *[f"FNIR @ FPIR {float(p):.1%}" for p in points],
                  f"gallery-aware threshold (FPIR {summary['target_fpir']:g})", "FNIR there", "FPIR there"]
        rows = []
        for name, m in methods.items():
            aware = m.get("gallery_aware") or {}
            rows.append([
                name, _percent(m["rank1"]), _percent(m["rank5"]),
                *[_percent((m.get("fnir_at_fpir") or {}).get(p)) for p in points],
                _number(aware.get("threshold")), _percent(aware.get("fnir")), _percent(aware.get("fpir")),
            ])
    else:
        header = ["method", f"{summary['way']}-way one-shot accuracy", "95% interval", "correct"]
        rows = [
            [
                name,
                _percent(m["accuracy"], 1),
                f"{_percent(m['ci95'][0], 1)} – {_percent(m['ci95'][1], 1)}",
                f"{m['correct']}/{summary['trials']}",
            ]
            for name, m in methods.items()
        ]
    return header, rows


def text_table(evaluation: Evaluation) -> str:
    """The results as an aligned plain-text table (evaluate.py prints it before the JSON line)."""
    return aligned(*result_table(evaluation))


def aligned(header: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart (the tables evaluate.py prints)."""
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]
    )


def open_set_table(results: dict[str, Any], target_fpir: float) -> str:
    """``evaluate.py openset``: one row per scorer and gallery size."""
    weights = list(next(iter(results.values()))["fnir_at_fpir"])
    header = ["scorer@enrolled", "rank-1", *[f"FNIR@FPIR1% {w}" for w in weights],
              f"gallery-aware (FPIR {target_fpir:g}) FNIR / FPIR [w]", "best alone FNIR / FPIR",
              "per-person threshold FNIR / FPIR"]
    rows = []
    for key, r in results.items():
        chosen, best, fixed = (r["calibrated"][name] for name in ("chosen", "best", "per_person"))
        rows.append([key, _percent(r["rank1"]), *[_percent(r["fnir_at_fpir"][w]["0.01"]) for w in weights],
                     f"{_percent(chosen['fnir'])} / {_percent(chosen['fpir'])} "
                     f"[{','.join(f'{m:g}' for m in chosen['margins'])}]",
                     f"{_percent(best['fnir'])} / {_percent(best['fpir'])}",
                     f"{_percent(fixed['fnir'])} / {_percent(fixed['fpir'])}"])
    return aligned(header, rows)


def notes(evaluation: Evaluation) -> list[str]:
    """Short sentences a reader must see next to the numbers (what was left out, and why)."""
    summary = evaluation.summary
    images = summary["images"]
    first = (
        f"Images: {images['total']} named ({images['from_cache']} vectors from the feature cache, {images['embedded']} "
        f"embedded; {images['missing']} missing, {images['unreadable']} unreadable); face taken: the "
        f"{summary['face_choice']} one; no face found in {images['no_face']} ({_percent(images['no_face_share'])} of "
        f"the images found), handled by the no-face policy {summary['no_face_policy']}."
    )
    lines = [first]
    if summary["command"] == "pairs":
        pairs, folds = summary["pairs"], summary["folds"]
        lines.append(
            f"Pairs: {pairs['evaluated']} of {pairs['listed']} evaluated ({pairs['same']} same, {pairs['different']} "
            f"different); {pairs['missing_image']} named a missing image ({pairs['replaced']} replaced, "
            f"{pairs['left_out']} left out); {pairs['rejected_no_face']} rejected for lack of a face."
        )
        lines.append(
            f"Folds: {folds['count']}, {'as defined by the file' if folds['from_file'] else 'cut from a single list'}; "
            + (
                "person-disjoint."
                if folds["person_disjoint"]
                else "NOT person-disjoint (people recur across folds), so the spread over folds is optimistic."
            )
        )
        if pairs["same"] != pairs["different"]:
            lines.append(
                "The evaluated pairs are unbalanced, so plain accuracy leans on the larger kind: 'balanced accuracy' "
                "weighs both kinds equally (threshold chosen the same way); the missing-image policy 'replace' restores a "
                "balanced list."
            )
        if summary.get("head_per_fold"):
            lines.append(
                f"head_per_fold: a head trained for each fold on {summary['head_per_fold']['trained_on']}, "
                f"{summary['head_per_fold']['epochs']} epochs."
            )
    elif summary["command"] == "identify":
        people, probes = summary["people"], summary["probes"]
        lines.append(
            f"People: {people['known']} enrolled with {summary['gallery_per_person']} images each, "
            f"{people['strangers']} held out as strangers, {people['too_few_images']} with fewer than "
            f"{people['min_images']} usable images left out. Probes: {probes['known']} of enrolled people, "
            f"{probes['strangers']} of strangers (at most {probes['max_per_person'] or 'all'} per person)."
        )
        lines.append(
            "FNIR: known people's probes missed or given another name; FPIR: strangers given any name (NIST FRVT 1:N). "
            "Decision statistic: best + w x (best - second best person), w chosen by each scorer's calibration "
            "for the gallery (0 without one); "
            "'FNIR @ FPIR' sets the threshold on these strangers (the scorer's quality), the gallery-aware threshold "
            "comes from the calibration alone (what a user gets)."
        )
        shipped = summary.get("shipped") or {}
        if shipped.get("threshold") is not None:
            lines.append(
                f"Shipped default: {shipped['scorer']} ({shipped['source']}), threshold {shipped['threshold']:.4g} for "
                f"{people['known']} people at FPIR {summary['target_fpir']:g}: FNIR {_percent(shipped['fnir'])}, "
                f"FPIR {_percent(shipped['fpir'])}."
            )
        else:
            lines.append(f"Shipped default: none ({shipped.get('source')}).")
        for size, entry in (summary.get("gallery_sizes") or {}).items():
            parts = []
            for name, m in entry["methods"].items():
                text = f"{name} FNIR@FPIR1% {_percent(m['fnir_at_fpir']['0.01'])}"
                aware = m.get("gallery_aware")
                fixed = next((value for key, value in m.items() if key.startswith("fixed_at_")), None)
                if aware:
                    text += f", gallery-aware FPIR {_percent(aware['fpir'])} FNIR {_percent(aware['fnir'])}"
                if fixed:
                    text += f", fixed threshold FPIR {_percent(fixed['fpir'])}"
                parts.append(text)
            lines.append(f"Gallery of {size} ({entry['known_with_probes']} with probes): " + "; ".join(parts) + ".")
    else:
        lines.append(
            f"{summary['trials']} trials over {summary['people']} people with 2+ images; chance is "
            f"{_percent(summary['chance'], 1)}."
        )
    return lines


# --------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------


def _pyplot():
    matplotlib = require("matplotlib", "`plots_dir` and `html_path` (evaluation plots)")

    matplotlib.use("Agg")  # headless: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(figure)
    return buffer.getvalue()


def render_plots(evaluation: Evaluation) -> dict[str, bytes]:
    """PNG bytes of every plot of this evaluation, keyed by file name."""
    plt = _pyplot()
    summary, curves = evaluation.summary, evaluation.curves
    plots: dict[str, bytes] = {}
    if summary["command"] == "pairs":
        figure, axis = plt.subplots(figsize=(6.4, 4.8))
        n_impostor = max(summary["pairs"]["different"], 1)
        for name, curve in curves.items():
            far, tar = curve["roc"]
            metrics = summary["methods"][name]
            axis.step(
                far,
                tar,
                where="post",
                color=METHOD_COLOURS.get(name),
                label=f"{name}  AUC {metrics['auc']:.4f}  acc {100 * metrics['accuracy']:.2f}%",
            )
        axis.set_xscale("log")
        axis.set_xlim(min(1e-3, 0.5 / n_impostor), 1.0)
        axis.set_ylim(
            max(
                0.0,
                min(float(np.min(c["roc"][1][np.asarray(c["roc"][0]) >= 1e-3], initial=1.0)) for c in curves.values())
                - 0.05,
            ),
            1.005,
        )
        axis.set_xlabel(f"false accept rate (different pairs accepted; {n_impostor} pairs)")
        axis.set_ylabel("true accept rate (same pairs accepted)")
        axis.set_title("ROC, pooled over folds")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(loc="lower right", fontsize=8)
        plots["roc.png"] = _png(figure)
        for name, curve in curves.items():
            figure, axis = plt.subplots(figsize=(6.4, 3.6))
            genuine, impostor = np.asarray(curve["genuine"]), np.asarray(curve["impostor"])
            both = np.concatenate([genuine, impostor])
            bins = np.linspace(both.min(), both.max(), 60) if len(both) else 10
            # Log density: the overlap of the two tails, where the errors are, stays visible.
            axis.hist(
                impostor,
                bins=bins,
                alpha=0.6,
                density=True,
                log=True,
                color="#ff7f0e",
                label=f"different ({len(impostor)})",
            )
            axis.hist(
                genuine, bins=bins, alpha=0.6, density=True, log=True, color="#1f77b4", label=f"same ({len(genuine)})"
            )
            threshold = summary["methods"][name]["threshold"]
            if threshold is not None:
                axis.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:.3f}")
            axis.set_xlabel(
                {"euclidean": "score = minus Euclidean distance", "cosine": "cosine similarity"}.get(
                    name, "head probability (same person)"
                )
            )
            axis.set_ylabel("density (log)")
            axis.set_title(f"{name}: score distributions")
            axis.legend(fontsize=8)
            plots[f"hist_{name}.png"] = _png(figure)
    elif summary["command"] == "identify":
        figure, axis = plt.subplots(figsize=(6.4, 4.2))
        for name, curve in curves.items():
            cmc = np.asarray(curve["cmc"])
            axis.plot(
                np.arange(1, len(cmc) + 1),
                cmc,
                marker="o",
                markersize=3,
                color=METHOD_COLOURS.get(name),
                label=f"{name}  rank-1 {100 * cmc[0]:.1f}%",
            )
        axis.set_xlabel("rank")
        axis.set_ylabel("identification rate")
        axis.set_title(f"CMC: {summary['people']['known']} enrolled people, {summary['probes']['known']} probes")
        axis.set_xticks(range(1, len(cmc) + 1, 2))
        axis.grid(True, alpha=0.3)
        axis.legend(loc="lower right", fontsize=8)
        plots["cmc.png"] = _png(figure)
        if any("det" in curve for curve in curves.values()):
            figure, axis = plt.subplots(figsize=(6.4, 4.2))
            for name, curve in curves.items():
                if "det" not in curve:
                    continue
                fpir, fnir = curve["det"]
                axis.step(fpir, fnir, where="post", color=METHOD_COLOURS.get(name), label=name)
                if "shipped" in curve:
                    axis.plot(*curve["shipped"], marker="*", markersize=12, color=METHOD_COLOURS.get(name),
                              linestyle="none", label=f"{name}: shipped threshold")
            axis.axvline(summary["target_fpir"], color="black", linestyle="--", linewidth=1,
                         label=f"FPIR {summary['target_fpir']:g}")
            axis.set_xscale("log")
            axis.set_yscale("log")
            axis.set_xlim(0.5 / max(summary["probes"]["strangers"], 1), 1.0)
            axis.set_xlabel(f"FPIR: share of strangers named ({summary['probes']['strangers']} stranger probes)")
            axis.set_ylabel("FNIR: share of known probes missed or misnamed")
            axis.set_title(f"Open set DET: {summary['people']['known']} people enrolled")
            axis.grid(True, which="both", alpha=0.3)
            axis.legend(loc="upper right", fontsize=8)
            plots["det.png"] = _png(figure)
    else:
        figure, axis = plt.subplots(figsize=(5.2, 3.6))
        names = list(curves)
        accuracy = np.array([curves[name]["oneshot"][0] for name in names])
        low = np.array([curves[name]["oneshot"][1] for name in names])
        high = np.array([curves[name]["oneshot"][2] for name in names])
        axis.bar(
            names,
            accuracy,
            yerr=[accuracy - low, high - accuracy],
            capsize=6,
            color=[METHOD_COLOURS.get(name, "grey") for name in names],
        )
        axis.axhline(summary["chance"], color="black", linestyle="--", linewidth=1)
        axis.annotate(
            f"chance {100 * summary['chance']:.1f}%",
            (0.99, summary["chance"]),
            xycoords=("axes fraction", "data"),
            xytext=(0, 3),
            textcoords="offset points",
            ha="right",
            fontsize=8,
        )
        for index, value in enumerate(accuracy):
            axis.annotate(
                f"{100 * value:.1f}%",
                (index, value),
                xytext=(0, -14),
                textcoords="offset points",
                ha="center",
                color="white",
                fontsize=9,
            )
        axis.set_ylim(0, 1.0)
        axis.set_ylabel("accuracy (95% interval)")
        axis.set_title(f"{summary['way']}-way one-shot, {summary['trials']} trials")
        plots["oneshot.png"] = _png(figure)
    return plots


# --------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; margin: 0.5em 0; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; }
.plots figure { margin: 0; flex: 1 1 440px; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dt { font-weight: bold; } dd { margin: 0; font-family: monospace; word-break: break-all; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.8em; }
"""


def _settings_rows(settings: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for key, value in settings.items():
        if isinstance(value, dict):
            rows += _settings_rows(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", "—" if value is None else str(value)))
    return rows


def render_html(evaluation: Evaluation, plots: dict[str, bytes]) -> str:
    """The whole report as one HTML string, plots embedded."""
    summary = evaluation.summary
    title = f"faceid evaluation: {summary['command']}"
    header, rows = result_table(evaluation)
    table = (
        "<table><tr>"
        + "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
        + "</tr>"
        + "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
        + "</table>"
    )
    figures = "".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        f"<figcaption>{html.escape(name)}</figcaption></figure>"
        for name, data in plots.items()
    )
    settings = evaluation.settings
    settings_list = "".join(
        f"<dt>{html.escape(key)}</dt><dd>{html.escape(value)}</dd>" for key, value in _settings_rows(settings)
    )
    note_items = "".join(f"<li>{html.escape(line)}</li>" for line in notes(evaluation))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>Generated {html.escape(settings["generated"])} by <code>{html.escape(settings["command_line"])}</code></p>
<h2>Results</h2>
{table}
<ul>{note_items}</ul>
<h2>Plots</h2>
<div class="plots">{figures}</div>
<h2>How this was measured</h2>
<dl>{settings_list}</dl>
<details><summary>Full JSON</summary><pre>{html.escape(json.dumps(summary, indent=2))}</pre></details>
</body></html>
"""


def write_outputs(
    evaluation: Evaluation, json_path: Path | None = None, plots_dir: Path | None = None, html_path: Path | None = None
) -> list[Path]:
    """Write what was asked for: the JSON, the PNG plots, the HTML page. Returns the paths written."""
    written: list[Path] = []
    if json_path is not None:
        write_json(json_path, evaluation.summary)
        written.append(json_path)
    if plots_dir is None and html_path is None:
        return written
    plots = render_plots(evaluation)
    if plots_dir is not None:
        plots_dir.mkdir(parents=True, exist_ok=True)
        for name, data in plots.items():
            with atomic_path(plots_dir / name) as temporary:
                temporary.write_bytes(data)
            written.append(plots_dir / name)
    if html_path is not None:
        with atomic_path(html_path) as temporary:
            temporary.write_text(render_html(evaluation, plots), encoding="utf-8")
        written.append(html_path)
    return written
