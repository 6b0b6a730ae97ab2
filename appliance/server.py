"""`appliance serve`: the API, the store and the job consumer in one process.

uvicorn owns the signals: Ctrl-C or SIGTERM starts its graceful shutdown, whose
lifespan exit stops the job children and marks their jobs interrupted."""

from __future__ import annotations

import fcntl
import getpass
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import IO

import uvicorn

from . import vision
from .app import create_app
from .ids import check_username
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
    return clean if check_username(clean) is None else "owner"


def ensure_owner(
    settings: Settings, username: str | None = None
) -> tuple[dict, str | None]:
    """The owner account; on first start it is created with one API key, returned
    so the caller can show it once. Only the key's hash is stored."""
    db = Database(settings.db_path)
    try:
        if db.user_count():
            return db.query(
                "SELECT * FROM users WHERE kind = 'personal' ORDER BY created_at LIMIT 1"
            )[0], None
        user = db.create_user(username or default_owner_name())
        return user, create_key(db, user["id"], "first key")
    finally:
        db.close()


class StartupError(Exception):
    """The appliance cannot start; the message says why, for the operator."""


def lock_home(home: Path) -> IO[str]:
    """Hold an exclusive lock on the data home for this process's lifetime: two
    appliances on one home would each take the other's jobs for crashed ones."""
    handle = open(home / "appliance.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise StartupError(
            f"{home} is already in use by an appliance ({holder}); stop it, or use"
            " another --home"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


def check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {host}:{port}: {exc.strerror}"
            ) from None


def serve(settings: Settings, owner: str | None = None) -> None:
    try:
        settings.home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(
            f"cannot use {settings.home} as the data home: {exc.strerror}"
        ) from None
    if owner is not None and (reason := check_username(owner)):
        raise StartupError(f"--owner {owner!r}: {reason}")
    lock = lock_home(settings.home)
    check_port(settings.host, settings.port)
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
    lock.close()
