"""clinicdb's migrations, shipped in the wheel as package data (``clinicdb.migrations``).

Not code to import: ``clinicdb.schema`` hands the folders ``core/`` and
``reference/`` to yoyo. ``legacy/`` keeps clinicdb 0.1's reference migration
as history (never applied). ``migrations.lock`` pins every published file.
"""
