"""The reference tables of the README and of docs/architecture.md are the ones the code generates (msma/docs.py),
and the pages point to nothing outside the repository."""

from __future__ import annotations

import re

import pytest

from msma import docs


@pytest.mark.parametrize("page", sorted(docs.GENERATED))
def test_the_generated_sections_are_current(page):
    text = (docs.REPO / page).read_text()
    assert docs.render(page, text) == text, f"{page} is stale: run  .venv/bin/python -m msma.docs"


def test_a_changed_option_makes_the_readme_stale():
    """The check can fail: a new option of the parser changes the commands table."""
    parser = docs.build_parser()
    before = docs.commands_table(parser)
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    commands.choices["report"].add_argument("--since", help="a new option")
    assert "`--since SINCE`" in docs.commands_table(parser) and "`--since" not in before


def test_every_command_and_run_file_is_in_the_readme():
    text = (docs.REPO / "README.md").read_text()
    for name in docs._subcommands(docs.build_parser())[0].choices:
        assert f"`msma {name}" in text
    for file in docs.layout.RUN_FILES:
        assert f"<run_id>/{file.name}`" in text


@pytest.mark.parametrize("page", ["README.md", "docs/architecture.md", "docs/results.md"])
def test_pages_point_to_nothing_outside_the_repository(page):
    text = (docs.REPO / page).read_text()
    assert not re.search(r"\.\./shared|/work/|DESIGN\.md", text)


def test_a_page_without_markers_is_an_error():
    with pytest.raises(ValueError, match="no '<!-- generated: commands -->'"):
        docs.render("README.md", "# a README without generated sections\n")
