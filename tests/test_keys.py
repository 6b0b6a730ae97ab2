import re

from appliance.keys import authenticate, create_key, hash_key
from appliance.store import Database


def test_key_format_and_only_hash_stored(tmp_path):
    db = Database(tmp_path / "a.db")
    user = db.create_user("alice")
    key = create_key(db, user["id"], "laptop")
    assert re.fullmatch(r"ul_[0-9a-f]{40}", key)
    dump = "\n".join(db.db.conn.iterdump())
    assert key not in dump
    assert key[3:] not in dump
    assert hash_key(key) in dump
    listed = db.api_keys(user["id"])
    assert listed[0]["prefix"] == key[:7] and listed[0]["name"] == "laptop"


def test_authenticate(tmp_path):
    db = Database(tmp_path / "a.db")
    user = db.create_user("alice")
    key = create_key(db, user["id"])
    assert authenticate(db, key)["username"] == "alice"
    wrong = key[:-1] + ("0" if key[-1] != "0" else "1")
    assert authenticate(db, wrong) is None
    assert authenticate(db, "ul_short") is None
    assert authenticate(db, key.upper()) is None


def test_keys_are_unique(tmp_path):
    db = Database(tmp_path / "a.db")
    user = db.create_user("alice")
    keys = {create_key(db, user["id"]) for _ in range(50)}
    assert len(keys) == 50
