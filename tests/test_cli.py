import re
import subprocess
import sys

from appliance.keys import authenticate
from appliance.store import Database


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        capture_output=True,
        text=True,
        check=True,
    )


def test_keys_create_makes_working_keys(tmp_path):
    home = tmp_path / "home"
    first = _run("keys", "create", "--home", str(home)).stdout.strip()
    second = _run("keys", "create", "--home", str(home), "--name", "ci").stdout.strip()
    assert re.fullmatch(r"ul_[0-9a-f]{40}", first) and re.fullmatch(
        r"ul_[0-9a-f]{40}", second
    )
    assert first != second
    db = Database(home / "appliance.db")
    assert authenticate(db, first)["id"] == authenticate(db, second)["id"]
    assert [k["name"] for k in db.api_keys(authenticate(db, first)["id"])] == [
        "first key",
        "ci",
    ]


def test_unknown_user_is_an_error(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance",
            "keys",
            "create",
            "--home",
            str(tmp_path),
            "--user",
            "nobody",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1 and "no user named nobody" in out.stderr


def test_first_start_prints_one_key_and_ctrl_c_stops_cleanly(tmp_path):
    import signal

    import httpx

    from appliance.demo import free_port, wait_ready

    home, port = tmp_path / "home", free_port()
    command = [
        sys.executable,
        "-m",
        "appliance",
        "serve",
        "--home",
        str(home),
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert "API key" in proc.stdout.readline()
        key = proc.stdout.readline().strip()
        assert re.fullmatch(r"ul_[0-9a-f]{40}", key)
        wait_ready(f"http://127.0.0.1:{port}", key, proc)
        summary = httpx.get(
            f"http://127.0.0.1:{port}/api/account/summary",
            headers={"Authorization": f"Bearer {key}"},
        )
        assert summary.status_code == 200
        second = subprocess.run(
            command[:-1] + [str(free_port())],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2 and "already in use" in second.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    stored = b"".join(p.read_bytes() for p in home.glob("appliance.db*"))
    assert len(stored) > 10_000 and key.encode() not in stored
    # A second start makes no new key and prints none.
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", key, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert proc.stdout.read() == ""
