"""The README's command table and docs/cli.md are generated from --help and must agree with it."""

from __future__ import annotations

from pathlib import Path

from dicomd.cli import main
from dicomd.cli.docs import leaf_commands, readme_block, readme_section, reference, walk

ROOT = Path(__file__).resolve().parent.parent
FIX = "run `.venv/bin/python scripts/gen_cli_docs.py` and commit README.md and docs/cli.md"


def all_commands():
    """(path, command) for every command and group, e.g. (['dicomd', 'prearchive', 'list'], cmd)."""
    return [(path, command) for path, command, _ctx in walk(main)]


def test_readme_section_matches_the_help_texts():
    assert readme_block((ROOT / "README.md").read_text()) == readme_section(main), FIX


def test_docs_reference_matches_the_help_texts():
    assert (ROOT / "docs" / "cli.md").read_text() == reference(main), FIX


def test_every_command_appears_in_the_readme_and_the_reference():
    readme = readme_block((ROOT / "README.md").read_text())
    docs = (ROOT / "docs" / "cli.md").read_text()
    for path, _command, _ctx in leaf_commands(main):
        name = " ".join(path)
        assert f"`{name} " in readme, f"{name} missing from README.md; {FIX}"
    for path, _command in all_commands():
        assert f"## {' '.join(path)}\n" in docs, f"{' '.join(path)} missing from docs/cli.md; {FIX}"


def test_the_operator_commands_exist():
    names = {" ".join(p[1:]) for p, _c in all_commands()}
    expected = {
        "serve", "status", "dump", "check", "config check", "config keys",
        "prearchive list", "prearchive show", "prearchive archive", "prearchive move", "prearchive delete",
        "prearchive rebuild", "prearchive snapshot", "prearchive preview",
        "archive list", "archive show",
        "quarantine list", "quarantine show", "quarantine retry", "quarantine delete",
    }
    assert expected <= names, expected - names


def test_every_command_has_help_with_an_example():
    for path, command, ctx in leaf_commands(main):
        assert "Example:" in command.get_help(ctx), f"{' '.join(path)} --help has no Example: block"
