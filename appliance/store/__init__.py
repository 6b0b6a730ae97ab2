"""The metadata store: one SQLite file in WAL mode, reached only through Database."""

from .database import Database

__all__ = ["Database"]
