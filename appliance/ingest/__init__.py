"""Dataset ingest: from an uploaded archive to stored, validated images and labels."""

from .job import IngestOptions, run_ingest

__all__ = ["IngestOptions", "run_ingest"]
