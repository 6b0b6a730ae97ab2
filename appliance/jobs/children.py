"""Running one job in a child process and following its events."""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

#: How long a child gets to stop after SIGTERM before it is killed.
KILL_GRACE = 10.0


@dataclass
class ChildResult:
    returncode: int
    events: list[dict] = field(default_factory=list)
    #: "cancelled", "shutdown" or "stalled" (the watchdog) when we ended it
    stopped: str | None = None

    def last(self, name: str) -> dict | None:
        return next((e for e in reversed(self.events) if e.get("event") == name), None)


class Children:
    """The live child processes of this appliance, so shutdown can end them all."""

    def __init__(self) -> None:
        self._procs: dict[str, subprocess.Popen] = {}
        self._killed: dict[str, str] = {}
        self._lock = threading.Lock()
        self.stopping = threading.Event()

    def run(
        self,
        job_id: str,
        command: str,
        spec: dict,
        workdir: Path,
        env: dict[str, str],
        on_event: Callable[[dict], None],
        should_cancel: Callable[[], bool],
        heartbeat: Callable[[], None],
    ) -> ChildResult:
        workdir.mkdir(parents=True, exist_ok=True)
        spec_path = workdir / f"{command}-spec.json"
        spec_path.write_text(json.dumps(spec, indent=2))
        read_fd, write_fd = os.pipe()
        child_env = {
            **os.environ,
            **env,
            "APPLIANCE_EVENT_FD": str(write_fd),
            "APPLIANCE_PARENT_PID": str(os.getpid()),
        }
        log = open(workdir / f"{command}.log", "ab")
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "appliance.worker", command, str(spec_path)],
                cwd=workdir,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
                start_new_session=True,
            )
        finally:
            os.close(write_fd)
            log.close()
        with self._lock:
            self._procs[job_id] = proc
        logger.info("job %s: %s started as pid %d", job_id, command, proc.pid)
        try:
            return self._follow(
                job_id, proc, read_fd, on_event, should_cancel, heartbeat
            )
        finally:
            os.close(read_fd)
            with self._lock:
                self._procs.pop(job_id, None)
                self._killed.pop(job_id, None)

    def kill(self, job_id: str, reason: str) -> bool:
        """SIGKILL a job's child at once (a frozen process ignores SIGTERM);
        its result says `stopped=reason`. False when it has no child."""
        with self._lock:
            proc = self._procs.get(job_id)
            if proc is None:
                return False
            self._killed[job_id] = reason
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        logger.warning("job %s: child %d killed (%s)", job_id, proc.pid, reason)
        return True

    def _follow(
        self, job_id, proc, read_fd, on_event, should_cancel, heartbeat
    ) -> ChildResult:
        result = ChildResult(returncode=0)
        buffer = b""
        last_beat = 0.0
        heard = False
        cancel_seen_at: float | None = None
        while True:
            ready, _, _ = select.select([read_fd], [], [], 0.5)
            if ready:
                chunk = os.read(read_fd, 65536)
                if not chunk:
                    break
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    event = _decode(line)
                    if event is not None:
                        heard = True
                        if event.get("event") != "beat":
                            result.events.append(event)
                        on_event(event)
            elif proc.poll() is not None:
                break  # exited; a grandchild may still hold the pipe open
            now = time.monotonic()
            # The heartbeat is the child's: only what it sends moves it, so the
            # watchdog sees a frozen child even while this loop goes on.
            if heard and now - last_beat > 1:
                heartbeat()
                last_beat, heard = now, False
            if self.stopping.is_set() and result.stopped is None:
                result.stopped = "shutdown"
                self.terminate(proc)
            elif result.stopped is None and should_cancel():
                # The child stops by itself at the next batch; force it if it won't.
                cancel_seen_at = cancel_seen_at or now
                if now - cancel_seen_at > 60:
                    result.stopped = "cancelled"
                    self.terminate(proc)
        result.returncode = proc.wait()
        with self._lock:
            killed = self._killed.get(job_id)
        if killed and result.stopped is None:
            result.stopped = killed
        if result.stopped is None and self.stopping.is_set():
            result.stopped = "shutdown"  # it died before this loop saw the flag
        if result.stopped is None and should_cancel():
            result.stopped = "cancelled"
        logger.info("job %s: child exited with %d", job_id, result.returncode)
        return result

    @staticmethod
    def terminate(proc: subprocess.Popen) -> None:
        """SIGTERM the child's process group, then SIGKILL it after a grace period."""
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return

        def _kill_later() -> None:
            try:
                proc.wait(KILL_GRACE)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

        threading.Thread(target=_kill_later, daemon=True).start()

    def stop_all(self, timeout: float = KILL_GRACE + 2) -> None:
        self.stopping.set()
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            self.terminate(proc)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                logger.warning("child %d did not stop in time", proc.pid)


def describe_exit(code: int) -> str:
    """A child's exit status in words; a negative code is the signal that ended it."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    hint = " (out of memory?)" if name == "SIGKILL" else ""
    return f"was killed by {name}{hint}"


def _decode(line: bytes) -> dict | None:
    try:
        event = json.loads(line)
    except ValueError:
        logger.warning("ignoring a malformed event line from a child")
        return None
    return event if isinstance(event, dict) else None
