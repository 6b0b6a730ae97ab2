"""The ingest body's imageMetadata: custom JSON per image, keyed by the image's
archive path or NDJSON `file` value, within the contract's limits."""

from __future__ import annotations

import json
from typing import Any

from ..errors import Invalid

MAX_SERIALIZED = 500_000
MAX_PATH = 1024
MAX_KEY = 128


def check_image_metadata(value: Any) -> dict[str, dict]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid("imageMetadata must be an object keyed by image path")
    if len(json.dumps(value)) > MAX_SERIALIZED:
        raise Invalid(f"imageMetadata is over {MAX_SERIALIZED} serialized characters")
    for path, meta in value.items():
        if len(path) > MAX_PATH:
            raise Invalid(f"imageMetadata paths must be at most {MAX_PATH} characters")
        if not isinstance(meta, dict):
            raise Invalid(f"imageMetadata[{path[:40]!r}] must be an object")
        if any(len(key) > MAX_KEY for key in meta):
            raise Invalid(f"imageMetadata keys must be at most {MAX_KEY} characters")
    return value
