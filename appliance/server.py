"""`appliance serve`: the API, the store and the job consumer in one process.

uvicorn owns the signals: Ctrl-C or SIGTERM starts its graceful shutdown, whose
lifespan exit stops the job children and marks their jobs interrupted."""

from __future__ import annotations

import getpass
import logging
import signal
import sys

import uvicorn

from . import vision
from .app import create_app
from .keys import create_key
from .settings import Settings
from .store import Database

logger = logging.getLogger(__name__)


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # One line per HTTP call drowns what matters; their warnings still show.
    for noisy in ("httpx", "httpcore", "huey"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def default_owner_name() -> str:
    try:
        name = getpass.getuser().lower()
    except (KeyError, OSError):
        name = ""
    clean = "".join(c for c in name if c.isalnum() or c == "-").strip("-")
    return clean if len(clean) >= 2 else "admin"


def ensure_owner(
    settings: Settings, username: str | None = None
) -> tuple[dict, str | None]:
    """The owner account; on first start it is created with one API key, returned
    so the caller can show it once. Only the key's hash is stored."""
    db = Database(settings.db_path)
    try:
        if db.user_count():
            return db.query("SELECT * FROM users ORDER BY created_at LIMIT 1")[0], None
        user = db.create_user(username or default_owner_name())
        return user, create_key(db, user["id"], "first key")
    finally:
        db.close()


def serve(settings: Settings, owner: str | None = None) -> None:
    settings.home.mkdir(parents=True, exist_ok=True)
    vision.apply_offline_environment(settings.home)
    user, key = ensure_owner(settings, owner)
    if key:
        # The one time this key is ever shown: the terminal, not the log.
        sys.stdout.write(
            f"Created owner account '{user['username']}'. API key (shown once, keep it safe):\n{key}\n"
        )
        sys.stdout.flush()
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=10,
        access_log=False,
    )
    server = uvicorn.Server(config)
    # uvicorn owns SIGINT and SIGTERM while it runs, shuts down gracefully (the
    # lifespan stops the jobs), then re-raises the signal into the handlers that
    # were there before. These make that last step a clean exit with status 0.
    received: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: received.append(signum))
    server.run()
    if received:
        logger.info("stopped by %s", signal.Signals(received[0]).name)
