"""The ``clinicdb`` command line: one module per command group."""
