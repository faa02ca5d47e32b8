"""``python -m clinicdb_cli``: the same as the ``clinicdb`` command."""

from .main import cli

cli()
