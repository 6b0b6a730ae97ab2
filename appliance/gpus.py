"""The local compute devices training jobs are placed on: each CUDA GPU, or the
CPU when there is none (or when the appliance is told to use the CPU).

A device is named as the Platform names its GPUs (`rtx-4090`, `h100-sxm`): a
lower-case slug of the card's name, with `-N` after the first when several cards
share a name. `cpu` is the CPU. Listing GPUs asks `nvidia-smi`, so the API
process never opens a CUDA context of its own."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import dataclass

logger = logging.getLogger(__name__)

_VENDOR = re.compile(r"^(nvidia|geforce|tesla|quadro)\s+", re.IGNORECASE)
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class Device:
    #: What ultralytics' `device=` takes: "cpu" or a CUDA index such as "0".
    index: str
    #: The gpuType a client names it by.
    gpu_type: str
    display_name: str
    memory_gb: float


CPU = Device(index="cpu", gpu_type="cpu", display_name="CPU", memory_gb=0.0)


def gpu_slug(name: str) -> str:
    """`NVIDIA GeForce RTX 4090` -> `rtx-4090`; `NVIDIA H100 80GB HBM3` -> `h100-80gb-hbm3`."""
    text = name.strip()
    while _VENDOR.match(text):
        text = _VENDOR.sub("", text, count=1)
    return _NOT_SLUG.sub("-", text.lower()).strip("-") or "gpu"


def parse_nvidia_smi(text: str) -> list[tuple[str, str, float]]:
    """Rows of `nvidia-smi --query-gpu=index,name,memory.total
    --format=csv,noheader,nounits`: (index, name, memory in GiB)."""
    rows = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        try:
            memory = round(float(parts[2]) / 1024, 1)
        except ValueError:
            memory = 0.0
        rows.append((parts[0], parts[1], memory))
    return rows


def devices_from(rows: list[tuple[str, str, float]], setting: str) -> list[Device]:
    """The devices training may use, from the GPUs found and the device setting
    (`auto`: every GPU; `cpu`; or indices such as `0,1`)."""
    if setting == "cpu":
        return [CPU]
    wanted = None if setting == "auto" else set(setting.split(","))
    chosen = [r for r in rows if wanted is None or r[0] in wanted]
    if not chosen:
        return [CPU]
    seen: dict[str, int] = {}
    out = []
    for index, name, memory in chosen:
        slug = gpu_slug(name)
        seen[slug] = seen.get(slug, 0) + 1
        gpu_type = slug if seen[slug] == 1 else f"{slug}-{seen[slug]}"
        out.append(Device(index, gpu_type, name, memory))
    return out


def _query_nvidia_smi() -> str:
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return ""
    try:
        done = subprocess.run(
            [
                tool,
                "--query-gpu=index,name,memory.total",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.warning("nvidia-smi did not answer: %s", exc)
        return ""
    return done.stdout if done.returncode == 0 else ""


def local_devices(setting: str = "auto") -> list[Device]:
    """This machine's training devices (asks nvidia-smi; the CPU when it finds none)."""
    if setting == "cpu":
        return [CPU]
    return devices_from(parse_nvidia_smi(_query_nvidia_smi()), setting)


def pick(devices: list[Device], gpu_type: str | None) -> Device | None:
    """The device a gpuType names; None when it names none of them. No gpuType,
    or the contract's default, means any device."""
    if gpu_type is None:
        return None
    return next((d for d in devices if gpu_type in (d.gpu_type, d.index)), None)


def load_level(running: int, queued: int) -> str:
    """The contract's availability words for one device: High when it is free,
    Medium while it trains with nothing waiting, Low when jobs wait for it."""
    if not running:
        return "High"
    return "Medium" if not queued else "Low"
