"""clinicdb: many clinics' patient data in one PostgreSQL database, kept apart by the database."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("clinicdb")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0.0.0"

__all__ = ["__version__"]
