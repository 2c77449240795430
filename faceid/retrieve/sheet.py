"""The contact sheet: each query sketch beside its top-k photos, one self-contained HTML page.

What an investigator reads: per query, the sketch, then the candidates best first, each with its
rank, score and name (and, in an evaluation, a green frame on the right person). Images are
embedded as small JPEG thumbnails, so the page can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from faceid.errors import ImageReadError
from faceid.io.images import read_image
from faceid.io.sealed import Key

THUMBNAIL_HEIGHT = 160


@dataclass(frozen=True)
class Candidate:
    path: Path
    name: str
    score: float
    correct: bool | None = None  # None: not known (a user's search); True/False in an evaluation


@dataclass(frozen=True)
class SheetRow:
    query: Path
    candidates: list[Candidate]
    note: str = ""  # e.g. "no face found"


def thumbnail_uri(path: Path, height: int = THUMBNAIL_HEIGHT, key: Key | None = None) -> str | None:
    """A ``data:`` URI of a small JPEG of the image (an encrypted one opened with ``key``), or None when
    it cannot be read."""
    from PIL import Image

    try:
        image = Image.fromarray(read_image(path, key))
    except ImageReadError:
        return None
    width = max(1, round(image.width * height / image.height))
    buffer = io.BytesIO()
    image.resize((width, height), Image.Resampling.LANCZOS).save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(path: Path, caption: str, frame: str, key: Key | None) -> str:
    uri = thumbnail_uri(path, key=key)
    image = f'<img src="{uri}" alt="{html.escape(path.name)}">' if uri else '<div class="missing">unreadable</div>'
    return (f'<figure class="{frame}" title="{html.escape(str(path))}">{image}'
            f"<figcaption>{caption}</figcaption></figure>")


def render_contact_sheet(rows: list[SheetRow], title: str, header_html: str = "", *, key: Key | None = None) -> str:
    """The page: ``header_html`` (e.g. an evaluation's numbers) above one row per query. ``key``: encrypted
    images open with it (the page itself is not encrypted: it shows the faces it is asked to)."""
    body = []
    for row in rows:
        cells = [_figure(row.query, f"<b>query</b><br>{html.escape(row.query.name)}", "query", key)]
        for rank, candidate in enumerate(row.candidates, start=1):
            frame = {None: "candidate", True: "candidate hit", False: "candidate miss"}[candidate.correct]
            cells.append(_figure(candidate.path, f"#{rank} {html.escape(candidate.name)}<br>{candidate.score:.3f}", frame,
                                 key))
        note = f'<p class="note">{html.escape(row.note)}</p>' if row.note else ""
        body.append(f'<section><div class="row">{"".join(cells)}</div>{note}</section>')
    generated = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
.row {{ display: flex; gap: 8px; align-items: flex-start; flex-wrap: wrap; }}
figure {{ margin: 0; padding: 3px; border: 3px solid #ddd; text-align: center; font-size: 12px; }}
figure.query {{ border-color: #333; margin-right: 14px; }}
figure.hit {{ border-color: #2a2; }}
figure.miss {{ border-color: #ddd; }}
figure img {{ height: {THUMBNAIL_HEIGHT}px; display: block; }}
.missing {{ height: {THUMBNAIL_HEIGHT}px; width: 120px; background: #eee; }}
section {{ margin-bottom: 18px; border-bottom: 1px solid #eee; padding-bottom: 10px; }}
.note {{ color: #a33; }}
table {{ border-collapse: collapse; margin-bottom: 1em; }} td, th {{ padding: 2px 10px; text-align: left; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Generated {generated}. Candidates best first; the score is the cosine similarity of the two vectors.</p>
{header_html}
{"".join(body)}
</body></html>
"""
