"""Videos become frames, as the Platform does: one frame a second, at most 100
(evenly spread over a longer video), each a WebP named `<video>_frame_001.webp`.
AVI is refused."""

from __future__ import annotations

import os
import posixpath
import tempfile
from pathlib import Path

from .images import ImageRejected
from .layout import _split_of

#: The Platform's limits: 1 GB per video, 1 frame per second, 100 frames.
MAX_VIDEO_BYTES = 1024**3
FRAMES_PER_SECOND = 1
MAX_FRAMES = 100
REFUSED_SUFFIXES = frozenset({".avi"})
WEBP_QUALITY = 90


def split_of_path(relative: str) -> str:
    return _split_of(relative, {})


def frame_name(video: str, number: int) -> str:
    stem = posixpath.splitext(posixpath.basename(video))[0]
    return f"{stem}_frame_{number:03d}.webp"


def _times(duration: float) -> list[float]:
    """Seconds at which to take frames: every second, or MAX_FRAMES evenly spread."""
    count = int(duration * FRAMES_PER_SECOND) or 1
    if count <= MAX_FRAMES:
        return [i / FRAMES_PER_SECOND for i in range(count)]
    return [duration * i / MAX_FRAMES for i in range(MAX_FRAMES)]


def extract_frames(data: bytes, name: str, tmp_dir: Path) -> list[tuple[str, bytes]]:
    """(frame name, WebP bytes) for each frame taken; raises ImageRejected."""
    suffix = posixpath.splitext(name)[1].lower()
    if suffix in REFUSED_SUFFIXES:
        raise ImageRejected(
            "unsupported_video", "AVI videos are not accepted; convert to MP4 or WebM"
        )
    import cv2  # opencv comes with ultralytics; only videos need it

    fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix="video-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        capture = cv2.VideoCapture(tmp_name)
        try:
            frames = _read_frames(capture, cv2)
        except cv2.error as exc:
            raise ImageRejected("corrupt_video", f"cannot decode: {exc}") from None
        finally:
            capture.release()
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    if not frames:
        raise ImageRejected("corrupt_video", "no frame could be decoded")
    out = []
    for number, frame in enumerate(frames, start=1):
        ok, encoded = cv2.imencode(
            ".webp", frame, [cv2.IMWRITE_WEBP_QUALITY, WEBP_QUALITY]
        )
        if ok:
            out.append((frame_name(name, number), encoded.tobytes()))
    return out


def _read_frames(capture, cv2) -> list:
    if not capture.isOpened():
        return []
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    if fps <= 0 or total <= 0:
        return []
    wanted = sorted({min(int(round(t * fps)), total - 1) for t in _times(total / fps)})
    frames, index, targets = [], 0, iter(wanted)
    target = next(targets, None)
    while target is not None:
        ok = capture.grab()
        if not ok:
            break
        if index == target:
            ok, frame = capture.retrieve()
            if ok:
                frames.append(frame)
            target = next(targets, None)
        index += 1
    return frames
