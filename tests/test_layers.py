"""The layers hold: no module of faceid imports a room above its own.

ARCHITECTURE.md's "Rooms" table says which room (a subpackage or a top-level module of faceid/)
may import which. :func:`layer_violations` reads that table and checks every import of every
module under a package root against it, with ``ast``: at module level or inside a function,
``import faceid.x``, ``from faceid.x import y``, ``from faceid.x import module``, relative imports
and ``importlib.import_module("faceid.x")`` with a literal name alike. It works on any copy of the
package, so the tests below prove it catches an upward import planted in a copy before trusting
its silence on the real tree.
"""

from __future__ import annotations

import ast
import re
import shutil
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, run_process

ARCHITECTURE = REPO / "ARCHITECTURE.md"
PACKAGE_ROOT = REPO / "faceid"
TABLE_HEADER = "| subpackage | holds | may import |"
ROOT_ROOM = "__init__"  # the package's own __init__.py: the public API's lazy names


@dataclass(frozen=True)
class Rule:
    """What one room may import: whole rooms (its row's, and theirs in turn) and single modules."""

    rooms: frozenset[str]
    modules: frozenset[str]  # dotted below the package, e.g. "features.cache"


@dataclass(frozen=True)
class Violation:
    path: str  # below the package root, e.g. "io/images.py"
    line: int
    imported: str  # the module imported, e.g. "faceid.apps.live"
    room: str  # the importing room
    target: str  # the room it imported


def read_rooms_table(architecture: Path) -> list[tuple[list[str], str]]:
    """The Rooms table's rows in order: (the rooms a row names, its "may import" cell).

    A room is named as `` `io/` `` (a subpackage) or `` `settings.py` `` (a module); several may share
    a row. Only the first and last cells are read, so the "holds" cell may contain anything.
    """
    lines = architecture.read_text(encoding="utf-8").splitlines()
    if TABLE_HEADER not in lines:
        raise ValueError(f"{architecture} has no Rooms table (a line {TABLE_HEADER!r})")
    rows = []
    for line in lines[lines.index(TABLE_HEADER) + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        names = re.findall(r"`([^`]+)`", cells[0])
        if not names or re.sub(r"`[^`]+`", "", cells[0]).strip(" ,"):
            raise ValueError(f"a Rooms row names its rooms as `name/` or `name.py`, comma-separated: {cells[0]!r}")
        rooms = []
        for name in names:
            match = re.fullmatch(r"(\w+)(/|\.py)", name)
            if not match:
                raise ValueError(f"not a subpackage (`name/`) or a module (`name.py`): {name!r}")
            rooms.append(match.group(1))
        rows.append((rooms, cells[-1]))
    return rows


def _names(text: str, every_room: set[str], cell: str) -> tuple[set[str], set[str]]:
    """``io, detect, features.cache`` -> ({io, detect}, {features.cache}); anything else is an error."""
    rooms, modules = set(), set()
    for item in (part.strip() for part in text.split(",")):
        if not re.fullmatch(r"\w+(\.\w+)*", item) or item.split(".")[0] not in every_room:
            raise ValueError(f"may import {cell!r}: {item!r} is neither a room of the table nor one of its modules")
        (modules if "." in item else rooms).add(item)
    return rooms, modules


def parse_may_import(cell: str, room: str, row_rooms: list[str], above: set[str], every_room: set[str]):
    """One room's own "may import" cell -> (rooms, modules) it names directly.

    The forms: ``everything`` (every other room), ``everything above`` (every room of the rows above),
    ``nothing of ours``, optionally with exceptions for rooms of the same row
    (``nothing of ours (extras: errors)``), and a comma-separated list of rooms and modules
    (``io, features.cache``).
    """
    if cell == "everything":
        return every_room - {room}, set()
    if cell == "everything above":
        return set(above), set()
    nothing = re.fullmatch(r"nothing of ours(?: \((.+)\))?", cell)
    if nothing:
        exceptions: dict[str, str] = {}
        for exception in (nothing.group(1) or "").split(";"):
            if not exception.strip():
                continue
            owner, _, names = exception.partition(":")
            if owner.strip() not in row_rooms or not names.strip():
                raise ValueError(f"may import {cell!r}: an exception reads `room: names`, for a room of its own row")
            exceptions[owner.strip()] = names.strip()
        if room not in exceptions:
            return set(), set()
        return _names(exceptions[room], every_room, cell)
    return _names(cell, every_room, cell)


def layer_rules(architecture: Path) -> dict[str, Rule]:
    """Every room of the table -> what it may import: what its row names, and what each named room
    may import in turn; a named module brings that module alone."""
    rows = read_rooms_table(architecture)
    every_room = {room for rooms, _ in rows for room in rooms}
    direct: dict[str, tuple[set[str], set[str]]] = {}
    above: set[str] = set()
    for rooms, cell in rows:
        for room in rooms:
            if room in direct:
                raise ValueError(f"{room!r} has two rows in the Rooms table")
            direct[room] = parse_may_import(cell, room, rooms, above, every_room)
        above |= set(rooms)
    rules = {}
    for room in direct:
        reached, modules, pending = set(), set(), [room]
        while pending:
            named_rooms, named_modules = direct[pending.pop()]
            modules |= named_modules
            pending.extend(named_rooms - reached)
            reached |= named_rooms
        rules[room] = Rule(frozenset(reached - {room}), frozenset(modules))
    return rules


def package_rooms(package_root: Path) -> set[str]:
    """The rooms of a package: its top-level modules and its subpackages (any folder holding Python)."""
    rooms = set()
    for child in package_root.iterdir():
        if child.suffix == ".py":
            rooms.add(child.stem)
        elif child.is_dir() and child.name != "__pycache__" and any(child.rglob("*.py")):
            rooms.add(child.name)
    return rooms


def _module_name(package_root: Path, path: Path) -> str:
    parts = [package_root.name, *path.relative_to(package_root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST, module: str, is_package: bool, known: set[str], package: str):
    """(line, dotted module) for every import of the package in one module's tree, at any depth."""
    package_parts = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name != package:  # bare `import faceid`: its uses are checked below
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                if source == package and re.fullmatch(r"__\w+__", alias.name):
                    continue  # the package's own metadata (__version__): already loaded, no room
                submodule = f"{source}.{alias.name}"
                yield node.lineno, submodule if submodule in known else source
        elif (
            isinstance(node, ast.Call)
            and (getattr(node.func, "attr", None) or getattr(node.func, "id", None)) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value  # importlib.import_module("faceid.x"): a name known before running
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == package
            and not re.fullmatch(r"__\w+__", node.attr)
            and f"{package}.{node.attr}" not in known
        ):
            yield node.lineno, package  # `faceid.FaceID` after `import faceid`: the public API


def _room_of(dotted: str) -> str:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else ROOT_ROOM


def layer_violations(package_root: Path, architecture: Path = ARCHITECTURE) -> list[Violation]:
    """Every import under ``package_root`` that its room may not make, by the Rooms table of
    ``architecture``; sorted by file and line. A room without a row is a :class:`ValueError`."""
    rules = layer_rules(architecture)
    missing = package_rooms(package_root) - set(rules)
    if missing:
        raise ValueError(f"rooms without a row in {architecture.name}'s Rooms table: {sorted(missing)}")
    package = package_root.name
    files = sorted(path for path in package_root.rglob("*.py") if "__pycache__" not in path.parts)
    known = {_module_name(package_root, path) for path in files}
    known |= {_module_name(package_root, folder / "__init__.py") for path in files for folder in path.parents
              if package_root in folder.parents}  # folders without an __init__.py (namespace packages)
    violations = []
    for path in files:
        relative = path.relative_to(package_root)
        room = relative.parts[0].removesuffix(".py")
        rule = rules[room]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        module = _module_name(package_root, path)
        for line, imported in _imports(tree, module, path.name == "__init__.py", known, package):
            if imported != package and not imported.startswith(package + "."):
                continue
            target = _room_of(imported)
            below = imported.partition(".")[2]
            if target == room or target in rule.rooms:
                continue
            if any(below == module or below.startswith(module + ".") for module in rule.modules):
                continue
            violations.append(Violation(relative.as_posix(), line, imported, room, target))
    return sorted(set(violations), key=lambda violation: (violation.path, violation.line, violation.imported))


def test_no_module_imports_a_room_above_its_own():
    violations = layer_violations(PACKAGE_ROOT)
    assert violations == [], "imports against ARCHITECTURE.md's Rooms table:\n" + "\n".join(
        f"  faceid/{v.path}:{v.line} imports {v.imported} ({v.room} may not import {v.target})" for v in violations
    )


def test_every_room_has_a_row_and_every_row_a_room():
    rooms_in_tree = package_rooms(PACKAGE_ROOT)
    rooms_in_table = set(layer_rules(ARCHITECTURE))
    assert sorted(rooms_in_tree - rooms_in_table) == [], "rooms of faceid/ without a row in ARCHITECTURE.md"
    assert sorted(rooms_in_table - rooms_in_tree) == [], "rows of ARCHITECTURE.md's Rooms table with no room in faceid/"


def test_the_table_reads_as_written():
    rules = layer_rules(ARCHITECTURE)
    assert rules["settings"] == Rule(frozenset(), frozenset())
    assert rules["extras"].rooms == {"errors"}
    assert rules["io"].rooms == {"settings", "errors"}
    assert rules["nets"].rooms == {"settings", "errors", "extras", "io"}
    assert rules["detect"].rooms == {"settings", "errors", "extras", "io", "nets"}
    assert "backbones" not in rules["detect"].rooms
    # A named module brings itself only: matching never reaches extraction through features.cache.
    assert rules["match"].modules == {"features.cache", "features.stats"}
    assert not {"features", "backbones", "detect"} & rules["match"].rooms
    assert not {"cli", "benchmarks", ROOT_ROOM, "__main__"} & rules["api"].rooms
    assert {"apps", "evaluate", "match", "features", "detect", "backbones", "io"} <= rules["api"].rooms
    assert rules[ROOT_ROOM].rooms >= {"api", "errors"} and "cli" not in rules[ROOT_ROOM].rooms
    assert rules["cli"].rooms >= {"api", "benchmarks", ROOT_ROOM}


@pytest.mark.parametrize("cell", ["io, sometimes detect", "io, nowhere", "nothing of ours (cli: io)", "io;detect"])
def test_a_may_import_cell_the_reader_does_not_understand_is_an_error(tmp_path, cell):
    architecture = tmp_path / "ARCHITECTURE.md"
    architecture.write_text(
        f"{TABLE_HEADER}\n|---|---|---|\n| `errors.py` | the errors | nothing of ours |\n| `io/` | files | {cell} |\n"
    )
    with pytest.raises(ValueError, match="may import"):
        layer_rules(architecture)


def _copy_package(tmp_path: Path) -> Path:
    copy = tmp_path / "faceid"
    shutil.copytree(PACKAGE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__", "*.dat", "*.npz"))
    return copy


def _plant(path: Path, code: str) -> int:
    """Append ``code`` to ``path``; the line of its last line, the import."""
    text = path.read_text(encoding="utf-8").rstrip("\n") + "\n\n\n" + textwrap.dedent(code).strip("\n") + "\n"
    path.write_text(text, encoding="utf-8")
    return len(text.splitlines())


@pytest.mark.parametrize(
    ("code", "imported", "target"),
    [
        ("def _planted():\n    from faceid.apps.live import LiveIdentifier", "faceid.apps.live", "apps"),
        ("def _planted():\n    from ..apps.live import LiveIdentifier", "faceid.apps.live", "apps"),
        ("def _planted():\n    from faceid.apps import live", "faceid.apps.live", "apps"),
        ("import faceid.features.extract", "faceid.features.extract", "features"),
        ("def _planted():\n    from faceid import FaceID", "faceid", ROOT_ROOM),
        ("def _planted():\n    return importlib.import_module('faceid.apps.live')", "faceid.apps.live", "apps"),
    ],
    ids=["absolute-in-a-function", "relative", "submodule-by-name", "module-level", "public-api", "import_module"],
)
def test_an_upward_import_planted_in_a_copy_is_reported(tmp_path, code, imported, target):
    copy = _copy_package(tmp_path)
    assert layer_violations(copy) == []
    line = _plant(copy / "io" / "images.py", code)
    assert layer_violations(copy) == [Violation("io/images.py", line, imported, "io", target)]


def test_a_module_of_a_room_not_named_in_full_is_reported(tmp_path):
    """match/ may import features.cache and features.stats, not the rest of features/."""
    copy = _copy_package(tmp_path)
    planted = "def _planted():\n    from faceid.features.embedding import ChipBatcher"
    line = _plant(copy / "match" / "scoring.py", planted)
    assert layer_violations(copy) == [
        Violation("match/scoring.py", line, "faceid.features.embedding", "match", "features")
    ]


def test_a_new_room_without_a_row_is_an_error(tmp_path):
    copy = _copy_package(tmp_path)
    (copy / "gadgets").mkdir()
    (copy / "gadgets" / "__init__.py").write_text('"""Grouping faces."""\n')
    with pytest.raises(ValueError, match=r"\['gadgets'\]"):
        layer_violations(copy)


def _run_python(code: str) -> str:
    result = run_process([sys.executable, "-c", code], what=f"python -c {code!r}", cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def test_importing_the_cnn_detector_loads_no_backbone():
    code = "import faceid.detect.mmod, sys; print([m for m in sys.modules if m.startswith('faceid.backbones')])"
    assert _run_python(code) == "[]"


def test_running_the_cnn_detector_loads_no_backbone():
    code = (
        "import sys, numpy as np\n"
        "from faceid.detect.faces import CNN_DETECTOR_MODEL, dlib_model_path\n"
        "from faceid.detect.mmod import cnn_detector\n"
        "cnn_detector(str(dlib_model_path(CNN_DETECTOR_MODEL))).detect(np.zeros((120, 120, 3), np.uint8))\n"
        "print(sorted(m for m in sys.modules if m.startswith('faceid.backbones')),\n"
        "      'faceid.nets.onnx_session' in sys.modules)"
    )
    assert _run_python(code) == "[] True"
