"""MkDocs hook: the index of faceid's modules, read at build time from the source tree.

``<!-- module-index -->`` becomes one table per subpackage: each module and the first line of its
docstring (read with :mod:`ast`, nothing imported). A module added, moved or removed shows up on the
next build; nothing is copied by hand.
"""

from __future__ import annotations

import ast
import html
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- module-index -->"


def first_line(path: Path) -> str:
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return docstring.strip().splitlines()[0] if docstring.strip() else ""


def module_index(package: Path = ROOT / "faceid") -> str:
    sections = []
    folders = [package] + sorted(path for path in package.iterdir()
                                 if path.is_dir() and (path / "__init__.py").is_file())
    for folder in folders:
        rows = []
        for module in sorted(folder.glob("*.py")):
            if module.name == "__main__.py":
                continue
            name = module.relative_to(ROOT).as_posix()
            rows.append(f"<tr><td><code>{html.escape(name)}</code></td><td>{html.escape(first_line(module))}</td></tr>")
        title = folder.relative_to(ROOT).as_posix() + "/"
        sections.append(f"### `{title}`\n\n<table>\n<thead><tr><th>module</th><th>what it holds</th></tr></thead>\n"
                        f"<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>\n")
    return "\n".join(sections)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, module_index())
    return markdown
