"""Every command is documented: help text with an example, and a README mention."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from clinicdb_cli.main import cli

from clinicdb.settings import SETTINGS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found: list[tuple[tuple[str, ...], click.Command]] = []
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        found.append((path, command))
        if isinstance(command, click.Group):
            found.extend(_commands(command, path))
    return found


COMMANDS = _commands(cli)


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    """`clinicdb ... --help` works and shows an Example block."""
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output, f"`clinicdb {' '.join(path)}` has no Example in its help"


def documented_paths(readme: str) -> set[tuple[str, ...]]:
    """The command paths the README's command table (the `## Commands` section) names in its first column.

    A cell such as `` `clinicdb audit tail \\| history` `` names ``audit``, ``audit tail`` and ``audit history``:
    the word after the group, then the first word of each ``\\|`` alternative. Words anywhere else (another
    column, an option's value, another table) name nothing.
    """
    section = readme.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    paths: set[tuple[str, ...]] = set()
    for line in section.splitlines():
        if not line.startswith("| `clinicdb "):
            continue
        cell = line.split(" | ", 1)[0]
        for span in re.findall(r"`clinicdb ([^`]*)`", cell):
            first, *others = span.split(r" \| ")
            group, *rest = first.split()
            paths.add((group,))
            for word in rest[:1] + [other.split()[0] for other in others if other.split()]:
                if re.fullmatch(r"[a-z][a-z-]*", word):
                    paths.add((group, word))
    return paths


def test_documented_paths_read_the_first_column_only() -> None:
    """A command word elsewhere (prose, an option value, another table) does not count as documenting it."""
    sample = (
        "# Sample\n\n## Commands\n\n| command | what it does |\n|---|---|\n"
        "| `clinicdb audit seal \\| verify` | keeps the tail of the trail sealed |\n"
        "| `clinicdb new table NAME [--references col:migration]` | write one |\n"
        "| `clinicdb rollback [--count N \\| --all]` | undo |\n\n"
        "## Operations\n\n| `clinicdb audit tail` | elsewhere |\n"
    )
    assert documented_paths(sample) == {("audit",), ("audit", "seal"), ("audit", "verify"), ("new",),
                                        ("new", "table"), ("rollback",)}  # fmt: skip


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_is_in_the_readme(path: tuple[str, ...]) -> None:
    """The README's command table has a row naming this command path (`clinicdb audit tail`, not just 'tail')."""
    assert path in documented_paths(README), f"the README's command table has no row for `clinicdb {' '.join(path)}`"


def test_the_readme_names_no_command_that_does_not_exist() -> None:
    """Every command path in the README's command table is a real command (a renamed one cannot linger)."""
    assert documented_paths(README) - {p for p, _ in COMMANDS} == set()


@pytest.mark.parametrize("name", [s.name for s in SETTINGS])
def test_every_setting_is_in_the_readme(name: str) -> None:
    """Each CLINICDB_* variable the code reads has a row in the README's configuration table."""
    assert f"| `{name}` |" in README


def test_version() -> None:
    """`clinicdb --version` prints the package version."""
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("clinicdb, version ")
