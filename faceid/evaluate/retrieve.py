"""``evaluate.py retrieve``: sketch -> photo retrieval, measured: rank-1/5/10, CMC, mAP, gallery growth.

Queries and gallery photos are matched by who they show: a flat file by its file-name stem
(``sketches/01.png`` is the person of ``photos/01.png``), a file in a person folder by the folder's
name (``sketches/ann/1.png`` and ``photos/ann/x.jpg``); both kinds may be mixed. ``--distractors``
adds photos of other people (flat or one folder per person, e.g. LFW) that match no query; the
measures are repeated as the gallery grows by nested random subsets of them (seeded), so the
fall of rank-1 with gallery size is visible. The top-level numbers are for the whole gallery
(every distractor in).

Queries without a face count as misses at every rank (and are listed); queries whose person has
no photo in the gallery are left out with a warning (all of them: an error naming examples).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceid.backbones import load_extractor
from faceid.detect.faces import FaceOptions
from faceid.errors import InputError
from faceid.evaluate.report import _png, _pyplot
from faceid.features.cache import describe_extractor
from faceid.io.sealed import Key
from faceid.io.store import atomic_path, write_bytes, write_json
from faceid.match.retrieval import CMC_MAX_RANK, ranking, retrieval_metrics
from faceid.retrieve.gallery import Gallery, embed_gallery, embed_queries, gallery_layout, identity
from faceid.retrieve.sheet import Candidate, SheetRow, render_contact_sheet
from faceid.settings import DEFAULTS

logger = logging.getLogger(__name__)

# Distractor counts the measures are repeated at (those below the number given), then all of them.
GROWTH_STEPS = (0, 10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000)
# Queries shown on the HTML report's contact sheet, and candidates per query.
SHEET_QUERIES = 12
SHEET_TOP = 5
# Prefix that keeps a distractor from ever matching a query's identity.
_DISTRACTOR = "\0distractor/"


@dataclass
class RetrievalEvaluation:
    summary: dict[str, Any]
    sheet: list[SheetRow]


def query_items(folder: Path) -> list[tuple[Path, str]]:
    """``(path, identity)`` of every query image (flat: by stem; in a person folder: by the folder)."""
    people = gallery_layout(folder, "`queries`")
    return [(path, identity(person, path.name)) for person, paths in people.items() for path in paths]


def evaluate_retrieve(queries: Path, gallery: Path, model_path: Path, distractors: Path | None = None,
                      features: Path | None = None, distractor_features: Path | None = None,
                      face_options: FaceOptions = FaceOptions(), workers: int = DEFAULTS.workers, seed: int = 0,
                      progress: bool = True, argv: list[str] | None = None, *,
                      key: Key | None = None) -> RetrievalEvaluation:
    """``key``: the galleries' caches are encrypted with it, and encrypted images open with it."""
    extractor = load_extractor(model_path)
    items = query_items(Path(queries))
    photos = embed_gallery(gallery, extractor, features, face_options, workers, progress=progress, key=key)
    known = set(photos.identities)
    matched = [(path, name) for path, name in items if name in known]
    unmatched = [str(path) for path, name in items if name not in known]
    if not matched:
        raise InputError(
            f"no query in {queries} matches a photo in {gallery} by name: queries pair with gallery photos by file-name "
            f"stem (sketches/01.png with photos/01.png) or by person folder; e.g. query {items[0][1]!r}, gallery "
            f"{photos.identities[0]!r}")
    if unmatched:
        logger.warning("%d of %d queries have no photo of their person in the gallery and are left out (e.g. %s)",
                       len(unmatched), len(items), unmatched[0])
    vectors, kept, failed = embed_queries([path for path, _ in matched], extractor, face_options, strict=False,
                                          key=key)
    if failed:
        logger.warning("%d queries gave no face and count as misses (e.g. %s)", len(failed), next(iter(failed.values())))
    query_names = np.array([matched[row][1] for row in kept], dtype=object)

    extra = None
    if distractors is not None:
        extra = embed_gallery(distractors, extractor, distractor_features, face_options, workers, progress=progress,
                              parameter="`distractors`", key=key)
    gallery_vectors = photos.vectors if extra is None else np.concatenate([photos.vectors, extra.vectors])
    gallery_names = np.array(photos.identities + ([] if extra is None else [_DISTRACTOR + n for n in extra.identities]),
                             dtype=object)
    if len(kept) == 0:
        raise InputError(f"none of the {len(matched)} matched queries gave a face: nothing to rank "
                         "(try `upsample` 2 or `detector` cnn, or, for face crops, skip detection: `detect`)")
    scores = vectors @ gallery_vectors.T
    relevant = query_names[:, None] == gallery_names[None, :]
    result = retrieval_metrics(scores, relevant, missed=len(failed), max_rank=CMC_MAX_RANK)

    growth = []
    if extra is not None:
        order = np.random.default_rng(seed).permutation(len(extra))
        steps = [count for count in GROWTH_STEPS if count < len(extra)] + [len(extra)]
        for count in steps:
            columns = np.concatenate([np.arange(len(photos)), len(photos) + np.sort(order[:count])])
            part = retrieval_metrics(scores[:, columns], relevant[:, columns], missed=len(failed))
            growth.append({"distractors": count, "gallery": part["gallery"],
                           **{key: part[key] for key in ("rank1", "rank5", "rank10", "map")}})

    summary = {
        "command": "retrieve",
        **{key: result[key] for key in ("rank1", "rank5", "rank10", "map", "cmc")},
        "median_rank": result["median_rank"],
        "queries": {"total": len(items), "scored": len(kept), "no_face": len(failed), "unmatched": len(unmatched),
                    "no_face_files": [str(matched[row][0]) for row in failed],
                    "unmatched_files": unmatched[:50]},
        "gallery": {"photos": len(photos), "identities": len(known), "skipped": len(photos.skipped),
                    "distractors": 0 if extra is None else len(extra), "size": len(gallery_vectors)},
        "by_gallery_size": growth,
        "extractor": {"path": str(model_path), "backbone": extractor.name, "fingerprint": extractor.fingerprint,
                      "description": describe_extractor(extractor.manifest), "domains": list(extractor.domains)},
        "settings": {"queries": str(queries), "gallery": str(gallery),
                     "distractors": None if distractors is None else str(distractors), "seed": seed,
                     "detector": face_options.detector, "upsample": face_options.effective_upsample,
                     "detect": face_options.detect,
                     "command_line": None if argv is None else " ".join(["evaluate.py", *argv])},
    }
    return RetrievalEvaluation(summary, _sheet(matched, kept, failed, scores, relevant, photos, extra))


def _sheet(matched, kept, failed, scores, relevant, photos: Gallery, extra: Gallery | None) -> list[SheetRow]:
    paths = photos.paths + ([] if extra is None else extra.paths)
    names = photos.identities + ([] if extra is None else [f"(distractor) {n}" for n in extra.identities])
    rows = []
    order = ranking(scores[:SHEET_QUERIES], relevant[:SHEET_QUERIES])
    for local, row in enumerate(kept[:SHEET_QUERIES]):
        candidates = [Candidate(paths[column], names[column], float(scores[local, column]), bool(relevant[local, column]))
                      for column in order[local, :SHEET_TOP]]
        rows.append(SheetRow(Path(matched[row][0]), candidates))
    for row, reason in list(failed.items())[:3]:
        rows.append(SheetRow(Path(matched[row][0]), [], reason))
    return rows


def text_table(summary: dict[str, Any]) -> str:
    lines = [(f"sketch -> photo retrieval: {summary['queries']['scored']} queries scored "
             f"({summary['queries']['no_face']} without a face count as misses), gallery of {summary['gallery']['size']} "
             f"photos ({summary['gallery']['distractors']} distractors)"),
             (f"rank-1 {summary['rank1']:.1%}   rank-5 {summary['rank5']:.1%}   rank-10 {summary['rank10']:.1%}   "
             f"mAP {summary['map']:.3f}   median rank {summary['median_rank']}")]
    if summary["by_gallery_size"]:
        lines.append("gallery   rank-1   rank-10  mAP")
        lines += [f"{row['gallery']:<9} {row['rank1']:<8.1%} {row['rank10']:<8.1%} {row['map']:.3f}"
                  for row in summary["by_gallery_size"]]
    return "\n".join(lines)


def render_plots(summary: dict[str, Any]) -> dict[str, bytes]:
    plt = _pyplot()
    plots = {}
    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    cmc = summary["cmc"]
    axis.plot(range(1, len(cmc) + 1), cmc, marker="o", markersize=3, label=f"rank-1 {cmc[0]:.1%}")
    axis.set(xlabel="rank", ylabel="share of queries found", title="CMC: sketch -> photo", ylim=(0, 1.02))
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
    plots["cmc.png"] = _png(figure)
    if summary["by_gallery_size"]:
        figure, axis = plt.subplots(figsize=(5.5, 3.8))
        rows = summary["by_gallery_size"]
        for key, label in (("rank1", "rank-1"), ("rank10", "rank-10")):
            axis.plot([row["gallery"] for row in rows], [row[key] for row in rows], marker="o", label=label)
        axis.set_xscale("log")
        axis.set(xlabel="gallery photos", ylabel="share of queries", title="As the gallery grows (distractors)",
                 ylim=(0, 1.02))
        axis.grid(alpha=0.3)
        axis.legend(loc="lower left")
        plots["rank1_by_gallery.png"] = _png(figure)
    return plots


def write_outputs(evaluation: RetrievalEvaluation, json_path: Path | None, plots_dir: Path | None,
                  html_path: Path | None, *, key: Key | None = None) -> list[Path]:
    import base64
    import html

    written = []
    if json_path is not None:
        write_json(json_path, evaluation.summary)
        written.append(json_path)
    if plots_dir is None and html_path is None:
        return written
    plots = render_plots(evaluation.summary)
    if plots_dir is not None:
        for name, data in plots.items():
            write_bytes(plots_dir / name, data)
            written.append(plots_dir / name)
    if html_path is not None:
        images = "".join(f'<img src="data:image/png;base64,{base64.b64encode(data).decode()}" alt="{name}">'
                         for name, data in plots.items())
        header = (f"<pre>{html.escape(text_table(evaluation.summary))}</pre>{images}"
                  f"<h2>First queries: top {SHEET_TOP} (green frame: the right person)</h2>")
        settings = html.escape(json.dumps({"extractor": evaluation.summary["extractor"],
                                           **evaluation.summary["settings"]}, indent=1))
        page = render_contact_sheet(evaluation.sheet, "Sketch -> photo retrieval", header + f"<pre>{settings}</pre>",
                                    key=key)
        with atomic_path(html_path) as temporary:
            temporary.write_text(page, encoding="utf-8")
        written.append(html_path)
    return written
