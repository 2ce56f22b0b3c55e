"""The reference tables of the README and of docs/architecture.md, generated from the code so they cannot go stale.

The command line (from :func:`msma.cli.build_parser`) and the files of a run (from :mod:`analysis.runs.layout`) in
README.md, the sections of ``run.json`` in docs/architecture.md. Each lives between a pair of markers::

    <!-- generated: commands -->
    ...
    <!-- end generated: commands -->

``python -m msma.docs`` rewrites them in place (atomically); ``tests/msma/test_docs.py`` fails when a page differs from
what this module generates, so a changed option or run file shows up in review.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from analysis.runs import layout
from analysis.runs.store import LATEST, MODELS_DIR
from analysis.study.volumes import atomic_write_bytes
from msma.cli import DEFAULT_MANIFEST, build_parser

REPO = Path(__file__).resolve().parents[1]


def _option(action: argparse.Action) -> str:
    flag = action.option_strings[-1]
    if action.nargs == 0:
        return f"`{flag}`"
    if action.choices:
        value = "{" + ",".join(map(str, action.choices)) + "}"
    elif action.default is not None:
        value = str(action.default)
    else:
        value = action.metavar or action.dest.upper()
    return f"`{flag} {value}`"


def _subcommands(parser: argparse.ArgumentParser) -> tuple[argparse._SubParsersAction, dict[str, str]]:
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands, {choice.dest: choice.help for choice in commands._choices_actions}


def _rows(prefix: str, parser: argparse.ArgumentParser) -> list[str]:
    """Table rows of every subcommand of ``parser`` (a command with subcommands of its own, such as
    ``msma tabular``, gets a row per subcommand)."""
    commands, helps = _subcommands(parser)
    rows = []
    for name, sub in commands.choices.items():
        if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
            rows += _rows(f"{prefix} {name}", sub)
            continue
        positional = [a for a in sub._actions if not a.option_strings]
        required = [a for a in sub._actions if a.option_strings and a.required]
        synopsis = " ".join(
            [f"{prefix} {name}"]
            + [f"[{a.dest.upper()}]" if a.nargs == "?" else a.dest.upper() for a in positional]
            + [f"{a.option_strings[-1]} {a.metavar or a.dest.upper()}" for a in required]
        )
        options = [_option(a) for a in sub._actions
                   if a.option_strings and not a.required and not isinstance(a, argparse._HelpAction)]
        rows.append(f"| `{synopsis}` | {helps[name]} | {', '.join(options)} |")
    return rows


def commands_table(parser: argparse.ArgumentParser | None = None) -> str:
    """One row per subcommand: its synopsis, what it does (its ``help``) and its options with their defaults."""
    rows = ["| command | what it does | options (default) |", "| --- | --- | --- |"]
    rows += _rows("msma", parser or build_parser())
    rows.append("")
    rows.append(f"`MANIFEST` defaults to `{DEFAULT_MANIFEST}`. Every command has `--help`.")
    return "\n".join(rows)


def outputs_table(output_dir: str = "runs") -> str:
    """One row per entry of a study's output folder and of a run folder (:data:`analysis.runs.layout.RUN_FILES`)."""
    rows = [
        "| path | what |",
        "| --- | --- |",
        f"| `{output_dir}/{LATEST}` | one line naming the published run; a refresh publishes atomically, so a failed "
        "one leaves the last good run |",
        f"| `{output_dir}/{MODELS_DIR}/` | trained checkpoints shared between runs, keyed by settings and training "
        "data |",
    ]
    rows += [f"| `{output_dir}/<run_id>/{f.name}` | {f.what} |" for f in layout.RUN_FILES]
    return "\n".join(rows)


def sections_table() -> str:
    """One row per section of ``run.json`` (:data:`analysis.runs.layout.RUN_SECTIONS`), in the order written."""
    rows = ["| section | what it records |", "| --- | --- |"]
    rows += [f"| `{s.key}` | {s.what} |" for s in layout.RUN_SECTIONS]
    return "\n".join(rows)


GENERATED = {
    "README.md": {"commands": commands_table, "outputs": outputs_table},
    "docs/architecture.md": {"run-sections": sections_table},
}
"""Page (relative to the repository) -> marker name -> the function generating that section."""


def _pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- generated: {name} -->\n)(.*?)(<!-- end generated: {name} -->)", re.S)


def render(page: str, text: str) -> str:
    """``text`` of ``page`` (a key of :data:`GENERATED`) with its generated sections as the code generates them."""
    for name, generate in GENERATED[page].items():
        pattern = _pattern(name)
        if not pattern.search(text):
            raise ValueError(f"{page}: no '<!-- generated: {name} -->' ... '<!-- end generated: {name} -->' markers")
        text = pattern.sub(lambda m, g=generate: m.group(1) + g() + "\n" + m.group(3), text)
    return text


def main() -> int:
    for page in GENERATED:
        path = REPO / page
        text = path.read_text()
        updated = render(page, text)
        if updated != text:
            atomic_write_bytes(path, updated.encode())
            print(f"updated the generated sections of {page}")
        else:
            print(f"{page}: generated sections are current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
