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
