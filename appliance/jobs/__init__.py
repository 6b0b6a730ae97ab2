"""Queued work: ingest, training and export, run by an embedded Huey consumer."""

from .queue import JobQueue

__all__ = ["JobQueue"]
