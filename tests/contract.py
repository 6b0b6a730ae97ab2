"""Checking responses against the Platform's OpenAPI contract (../shared/contract)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

_RELATIVE = Path("shared") / "contract" / "openapi.json"
# ../shared beside the checkout; found from a git worktree one level deeper too.
CONTRACT = next(
    (
        p / _RELATIVE
        for p in Path(__file__).resolve().parents
        if (p / _RELATIVE).exists()
    ),
    Path(__file__).resolve().parents[2] / _RELATIVE,
)


@functools.cache
def _document() -> dict:
    return json.loads(CONTRACT.read_text())


def response_schema(method: str, path: str, status: int) -> dict:
    operation = _document()["paths"][path][method.lower()]
    content = operation["responses"][str(status)]["content"]["application/json"]
    return content["schema"]


def problems(method: str, path: str, status: int, body: object) -> list[str]:
    """Why `body` does not match the contract's response for this operation."""
    root = {
        "components": _document()["components"],
        **response_schema(method, path, status),
    }
    validator = Draft202012Validator(root)
    return [
        _describe(e)
        for e in sorted(validator.iter_errors(body), key=lambda e: list(e.path))
    ]


def _describe(error: ValidationError) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "(top)"
    return f"{where}: {error.message[:200]}"
