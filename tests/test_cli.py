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


def test_users_create_and_reset_password(tmp_path):
    from appliance.secrets_ import verify_secret

    home = str(tmp_path / "home")
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance",
            "users",
            "create",
            "dana",
            "--home",
            home,
            "--password-stdin",
            "--key",
        ],
        input="first-password\n",
        capture_output=True,
        text=True,
        check=True,
    )
    lines = made.stdout.split()
    assert lines[:2] == ["created", "dana"] and re.fullmatch(
        r"ul_[0-9a-f]{40}", lines[2]
    )
    db = Database(f"{home}/appliance.db")
    assert verify_secret("first-password", db.user_by_name("dana")["password_hash"])
    db.create_session("h", db.user_by_name("dana")["id"], "c", "2999-01-01T00:00:00")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance",
            "users",
            "reset-password",
            "dana",
            "--home",
            home,
            "--password-stdin",
        ],
        input="second-password\n",
        capture_output=True,
        text=True,
        check=True,
    )
    assert verify_secret("second-password", db.user_by_name("dana")["password_hash"])
    assert db.session("h") is None  # its sessions ended
    for args, stdin in (
        (["create", "dana"], "another-pass\n"),
        (["create", "Bad"], "another-pass\n"),
        (["create", "eve"], "short\n"),
        (["reset-password", "nobody"], "another-pass\n"),
    ):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "appliance",
                "users",
                *args,
                "--home",
                home,
                "--password-stdin",
            ],
            input=stdin,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 2 and out.stderr.startswith("appliance: "), args
