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


def _command_cells() -> list[str]:
    """The first cell of every row of the README's command table (rows that start with `clinicdb ...`)."""
    cells = []
    for line in README.splitlines():
        if line.startswith("| `clinicdb "):
            cells.append(line.split(" | ", 1)[0].removeprefix("| "))
    return cells


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_is_in_the_readme(path: tuple[str, ...]) -> None:
    """The README's command table has a row naming every command: `clinicdb GROUP` starts the row's first cell
    and a subcommand is one of the words listed in that same cell."""
    rows = [c for c in _command_cells() if re.search(rf"`clinicdb {re.escape(path[0])}\b", c)]
    assert rows, f"the README's command table has no row for `clinicdb {path[0]}`"
    if len(path) > 1:
        assert any(path[-1] in re.findall(r"[a-z][a-z-]*", cell) for cell in rows), (
            f"the README's command table row for `clinicdb {path[0]}` does not list `{path[-1]}`"
        )


@pytest.mark.parametrize("name", [s.name for s in SETTINGS])
def test_every_setting_is_in_the_readme(name: str) -> None:
    """Each CLINICDB_* variable the code reads has a row in the README's configuration table."""
    assert f"| `{name}` |" in README


def test_version() -> None:
    """`clinicdb --version` prints the package version."""
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("clinicdb, version ")
