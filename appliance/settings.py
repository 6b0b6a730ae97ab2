"""Settings for one appliance, built once from the environment and CLI flags."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from .ratelimit import DEFAULT_IP_LIMIT, DEFAULT_LIMITS, parse_limits

DEFAULT_HOME = "~/.local/share/appliance"


@dataclass(frozen=True)
class Settings:
    """Everything a running appliance needs to know about its surroundings.

    Built by :func:`load_settings`; pass it explicitly, never read the environment
    elsewhere.
    """

    #: Data home: the metadata database, the queue, the blob store and the runs.
    home: Path
    #: Address the API listens on; loopback by default, since keys travel in clear.
    host: str = "127.0.0.1"
    port: int = 8000
    #: URL clients should use to reach this appliance (signed URLs are built on it).
    #: Defaults to http://host:port.
    public_url: str | None = None
    #: Huey worker threads. Each job that needs ultralytics runs in its own child
    #: process, so threads here only wait on children or run light ingest work.
    workers: int = 2
    #: "auto" picks the first CUDA GPU when there is one, else the CPU.
    device: str = "auto"
    #: Largest accepted upload, in bytes.
    max_upload_bytes: int = 20 * 1024**3
    #: Requests a minute per API key, by category (0: unlimited). Set with
    #: APPLIANCE_RATE_LIMITS="default=100,training=10,upload=10,predict=20,...".
    rate_limits: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    #: Requests a minute per client address on /api/* (0: unlimited).
    ip_rate_limit: int = DEFAULT_IP_LIMIT
    #: Length of a rate-limit window in seconds (the Platform's minute).
    rate_window: int = 60
    #: Lifetime of signed blob URLs, in seconds.
    signed_url_ttl: int = 12 * 3600
    #: Local folders users may browse and ingest datasets from (the offline
    #: stand-in for cloud buckets). Set with APPLIANCE_STORAGE_ROOTS, absolute
    #: paths separated by os.pathsep; none by default.
    storage_roots: tuple[Path, ...] = ()
    #: Hosts webhook URLs may point at (APPLIANCE_WEBHOOK_HOSTS, comma-separated).
    #: The appliance is offline by design, so a webhook may only reach a host the
    #: operator named: by default this machine alone.
    webhook_hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
    #: Seconds before the first retry of a failed webhook delivery; each later
    #: retry waits twice as long (APPLIANCE_WEBHOOK_RETRY_SECONDS).
    webhook_retry_seconds: float = 120.0
    #: Attempts per delivery before it is given up (APPLIANCE_WEBHOOK_ATTEMPTS):
    #: 6 attempts with a 120 s start span about an hour.
    webhook_attempts: int = 6
    #: A training job whose trainer sends nothing (no batch, no epoch, no beat) for
    #: this many seconds is shown `stalled` (APPLIANCE_STALL_SECONDS).
    stall_seconds: int = 600
    #: ... and after this many it fails with code `stalled` and its trainer is
    #: killed, freeing the GPU (APPLIANCE_FAIL_SECONDS). A run streamed in from
    #: elsewhere fails after this long without events.
    fail_seconds: int = 1800

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def db_path(self) -> Path:
        return self.home / "appliance.db"

    @property
    def queue_path(self) -> Path:
        return self.home / "queue.db"

    @property
    def blobs(self) -> Path:
        return self.home / "blobs"

    @property
    def runs(self) -> Path:
        return self.home / "runs"

    @property
    def yolo_dir(self) -> Path:
        """YOLO_CONFIG_DIR: ultralytics' settings and fonts live here, not in ~."""
        return self.home / "ultralytics"

    def with_overrides(self, **changes: object) -> Settings:
        clean = {k: v for k, v in changes.items() if v is not None}
        if "home" in clean:
            clean["home"] = Path(str(clean["home"])).expanduser().resolve()
        return replace(self, **clean)


class SettingsError(ValueError):
    """A setting has a value the appliance cannot use."""


_DEVICE = re.compile(r"^(auto|cpu|\d+(,\d+)*)$")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, not {raw!r}") from None


def _limits(text: str) -> dict[str, int]:
    try:
        return parse_limits(text)
    except ValueError as exc:
        raise SettingsError(f"APPLIANCE_RATE_LIMITS: {exc}") from None


def _roots(text: str) -> tuple[Path, ...]:
    roots: list[Path] = []
    for raw in text.split(os.pathsep):
        if not raw.strip():
            continue
        path = Path(raw.strip())
        if not path.is_absolute():
            raise SettingsError(f"APPLIANCE_STORAGE_ROOTS: {raw!r} is not absolute")
        if not path.is_dir():
            raise SettingsError(f"APPLIANCE_STORAGE_ROOTS: {raw!r} is not a folder")
        resolved = path.resolve()
        if resolved not in roots:
            roots.append(resolved)
    return tuple(roots)


def _hosts(text: str) -> tuple[str, ...]:
    hosts = tuple(h.strip().strip("[]").lower() for h in text.split(",") if h.strip())
    for host in hosts:
        if not re.match(r"^[a-z0-9.:-]+$", host):
            raise SettingsError(f"APPLIANCE_WEBHOOK_HOSTS: {host!r} is not a host name")
    return hosts


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, not {raw!r}") from None
    if not 0 < value <= 86400:
        raise SettingsError(f"{name} must be between 0 and 86400 seconds")
    return value


def load_settings(
    environ: Mapping[str, str] | None = None, **overrides: object
) -> Settings:
    """Read APPLIANCE_* variables, then apply CLI overrides (None means unset)."""
    env = os.environ if environ is None else environ
    home = Path(env.get("APPLIANCE_HOME", DEFAULT_HOME)).expanduser().resolve()
    settings = Settings(
        home=home,
        host=env.get("APPLIANCE_HOST", "127.0.0.1"),
        port=_int(env, "APPLIANCE_PORT", 8000),
        public_url=env.get("APPLIANCE_PUBLIC_URL") or None,
        workers=_int(env, "APPLIANCE_WORKERS", 2),
        device=env.get("APPLIANCE_DEVICE", "auto"),
        rate_limits=_limits(env.get("APPLIANCE_RATE_LIMITS", "")),
        ip_rate_limit=_int(env, "APPLIANCE_IP_RATE_LIMIT", DEFAULT_IP_LIMIT),
        storage_roots=_roots(env.get("APPLIANCE_STORAGE_ROOTS", "")),
        webhook_hosts=_hosts(env.get("APPLIANCE_WEBHOOK_HOSTS", "127.0.0.1,localhost")),
        webhook_retry_seconds=_seconds(env, "APPLIANCE_WEBHOOK_RETRY_SECONDS", 120.0),
        webhook_attempts=_int(env, "APPLIANCE_WEBHOOK_ATTEMPTS", 6),
        stall_seconds=_int(env, "APPLIANCE_STALL_SECONDS", 600),
        fail_seconds=_int(env, "APPLIANCE_FAIL_SECONDS", 1800),
    ).with_overrides(**overrides)
    if not 1 <= settings.port <= 65535:
        raise SettingsError(f"port must be between 1 and 65535, not {settings.port}")
    if not 1 <= settings.workers <= 64:
        raise SettingsError(f"workers must be between 1 and 64, not {settings.workers}")
    if not 1 <= settings.webhook_attempts <= 50:
        raise SettingsError("APPLIANCE_WEBHOOK_ATTEMPTS must be between 1 and 50")
    if not 1 <= settings.stall_seconds < settings.fail_seconds:
        raise SettingsError(
            "stall seconds must be at least 1 and below fail seconds, not"
            f" {settings.stall_seconds} and {settings.fail_seconds}"
        )
    if not _DEVICE.match(settings.device):
        raise SettingsError(
            "device must be auto, cpu or CUDA indices such as 0 or 0,1,"
            f" not {settings.device!r}"
        )
    return settings
