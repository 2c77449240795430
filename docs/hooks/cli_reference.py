"""MkDocs hook: the CLI reference, rendered at build time from the argparse parsers themselves.

A page holding the line ``<!-- cli-reference -->`` gets, in its place, one section per
``faceid <command>`` of ``faceid.cli.main.SUBCOMMANDS``: the root script that runs the same code, the
aliases, the usage line, the parser's description and every option with its help text and default
(sub-commands such as ``evaluate pairs`` each get their own). Nothing is copied by hand, so the
reference cannot drift from the parsers. ``<!-- cli-commands -->`` becomes the table of commands.
"""

from __future__ import annotations

import argparse
import html
import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # a docs build from a clone without the package installed
    sys.path.insert(0, str(ROOT))

REFERENCE_MARKER = "<!-- cli-reference -->"
COMMANDS_MARKER = "<!-- cli-commands -->"


def _subcommands():
    from faceid.cli.main import SUBCOMMANDS

    return SUBCOMMANDS


def _anchor(title: str) -> str:
    return title.replace(" ", "-").replace("_", "-")


def commands_table() -> str:
    """``faceid <command>`` → script, aliases and first docstring line, from ``SUBCOMMANDS``."""
    from faceid.cli.main import summary_line

    rows = ["| `faceid …` | script | what it does |", "|---|---|---|"]
    for command in _subcommands():
        aliases = f" (alias {', '.join(f'`{alias}`' for alias in command.aliases)})" if command.aliases else ""
        rows.append(f"| [`{command.name}`](#{_anchor('faceid ' + command.name)}){aliases} | `{command.script}` | "
                    f"{html.escape(summary_line(command).rstrip('.')).replace('|', '&#124;')} |")
    return "\n".join(rows)


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return "off"
    if action.default is None or action.default == argparse.SUPPRESS:
        return "—"
    if isinstance(action.default, (list, tuple)):
        return " ".join(str(value) for value in action.default)
    return str(action.default)


def _option_cell(action: argparse.Action) -> str:
    names = ", ".join(action.option_strings) if action.option_strings else action.dest
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        value = "{" + ",".join(str(choice) for choice in action.choices) + "}"
    elif action.nargs == 0:
        value = ""
    else:
        value = action.metavar or (action.dest.upper() if action.option_strings else "")
        if isinstance(value, tuple):  # nargs=2 with a metavar per value, e.g. --domains A B
            value = " ".join(value)
        elif action.nargs in ("+", "*"):
            value = f"{value} [{value} ...]"
        elif isinstance(action.nargs, int) and action.nargs > 1:
            value = " ".join([value] * action.nargs)
    return f"<code>{html.escape(names + (' ' + value if value else ''))}</code>"


def _help(action: argparse.Action, parser: argparse.ArgumentParser) -> str:
    text = action.help or ""
    if "%(" in text:  # argparse's own substitutions (%(default)s, %(prog)s)
        text = text % {**vars(action), "prog": parser.prog}
    return html.escape(text)


def _rows(parser: argparse.ArgumentParser, actions) -> list[str]:
    rows = []
    for action in actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        rows.append(f"<tr><td>{_option_cell(action)}</td><td><code>{html.escape(_default(action))}</code></td>"
                    f"<td>{_help(action, parser)}</td></tr>")
    return rows


def options_table(parser: argparse.ArgumentParser) -> str:
    """Every option of ``parser`` (help included) as HTML tables, one per argument group of the parser."""
    tables = []
    for group in parser._action_groups:
        rows = _rows(parser, group._group_actions)
        if not rows:
            continue
        caption = group.title if group.title not in ("options", "optional arguments", "positional arguments") else ""
        tables.append(("<p><strong>" + html.escape(caption) + "</strong></p>\n" if caption else "")
                      + "<table>\n<thead><tr><th>option</th><th>default</th><th>what it does</th></tr></thead>\n"
                      "<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>")
    return "\n\n".join(tables)


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, subparser in action.choices.items():
                yield name, subparser, helps.get(name, "")


def parser_section(title: str, parser: argparse.ArgumentParser, level: int, note: str = "") -> str:
    parts = [f"{'#' * level} `{title}` {{#{_anchor(title)}}}", ""]
    if note:
        parts += [note, ""]
    parts += ["```text", parser.format_usage().strip(), "```", ""]
    if parser.description:
        parts += ["```text", parser.description.strip(), "```", ""]
    parts += [options_table(parser), ""]
    for name, subparser, help_text in _subparsers(parser):
        subparser.prog = f"{title} {name}"
        parts.append(parser_section(f"{title} {name}", subparser, level + 1, html.escape(help_text or "")))
    return "\n".join(parts)


def cli_reference() -> str:
    sections = []
    for command in _subcommands():
        parser = importlib.import_module(f"faceid.cli.{command.module}").build_parser()
        parser.prog = f"faceid {command.name}"
        aliases = f"; alias {', '.join(f'`faceid {alias}`' for alias in command.aliases)}" if command.aliases else ""
        note = f"Also `python {command.script}` (the same program and parser){aliases}."
        sections.append(parser_section(f"faceid {command.name}", parser, 2, note))
        module = importlib.import_module(f"faceid.cli.{command.module}")
        for word, build in getattr(module, "LEADING_PARSERS", {}).items():
            leading = build()
            leading.prog = f"faceid {command.name} {word}"
            sections.append(parser_section(leading.prog, leading, 3))
    return "\n".join(sections)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if COMMANDS_MARKER in markdown:
        markdown = markdown.replace(COMMANDS_MARKER, commands_table())
    if REFERENCE_MARKER in markdown:
        markdown = markdown.replace(REFERENCE_MARKER, cli_reference())
    return markdown
