"""The Database class: owns the SQLite file, its WAL mode and its migrations."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from ._accounts import AccountsMixin
from ._dataset_ops import DatasetOpsMixin
from ._datasets import DatasetsMixin
from ._embeddings import EmbeddingsMixin
from ._hooks import HooksMixin
from ._jobs import JobsMixin
from ._model_ops import ModelOpsMixin
from ._models import ModelsMixin
from ._schema import JSON_COLUMNS, MIGRATIONS
from ._versions import VersionsMixin

logger = logging.getLogger(__name__)


class Database(
    AccountsMixin,
    DatasetsMixin,
    ModelsMixin,
    DatasetOpsMixin,
    JobsMixin,
    VersionsMixin,
    EmbeddingsMixin,
    ModelOpsMixin,
    HooksMixin,
):
    """Metadata for one appliance. Safe to share between threads: each thread gets
    its own connection, and writes are serialised by one lock."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self._migrate()

    # -- connections -------------------------------------------------------

    @property
    def db(self) -> sqlite_utils.Database:
        conn = getattr(self._local, "db", None)
        if conn is None:
            raw = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            raw.execute("PRAGMA journal_mode=WAL")
            raw.execute("PRAGMA synchronous=NORMAL")
            raw.execute("PRAGMA foreign_keys=ON")
            raw.execute("PRAGMA busy_timeout=30000")
            conn = sqlite_utils.Database(raw)
            self._local.db = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "db", None)
        if conn is not None:
            conn.close()
            self._local.db = None

    @contextmanager
    def atomic(self) -> Iterator[sqlite_utils.Database]:
        """One write transaction; nested calls join the outer one."""
        with self._write_lock:
            db = self.db
            depth = getattr(self._local, "depth", 0)
            if depth == 0:
                db.conn.execute("BEGIN IMMEDIATE")
            self._local.depth = depth + 1
            try:
                yield db
            except BaseException:
                self._local.depth = depth
                if depth == 0:
                    db.conn.execute("ROLLBACK")
                raise
            self._local.depth = depth
            if depth == 0:
                db.conn.execute("COMMIT")

    # -- reading -----------------------------------------------------------

    def query(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        return [_decode(row) for row in self.db.query(sql, params or [])]

    def query_one(self, sql: str, params: Any = None) -> dict[str, Any] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def scalar(self, sql: str, params: Any = None) -> Any:
        row = self.db.execute(sql, params or []).fetchone()
        return row[0] if row else None

    # -- migrations --------------------------------------------------------

    def _migrate(self) -> None:
        with self.atomic() as db:
            db.conn.execute(
                "CREATE TABLE IF NOT EXISTS migrations (id INTEGER PRIMARY KEY, name TEXT)"
            )
            done = {row[0] for row in db.execute("SELECT id FROM migrations")}
            for number, (name, statements) in enumerate(MIGRATIONS, start=1):
                if number in done:
                    continue
                logger.info("applying migration %d: %s", number, name)
                for statement in statements:
                    db.conn.execute(statement)
                db.conn.execute(
                    "INSERT INTO migrations (id, name) VALUES (?, ?)", (number, name)
                )


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for key in JSON_COLUMNS.intersection(row):
        value = row[key]
        if isinstance(value, str):
            row[key] = json.loads(value)
    return row


def encode(value: Any) -> str | None:
    """JSON text for a JSON column (None stays NULL)."""
    return None if value is None else json.dumps(value, separators=(",", ":"))
