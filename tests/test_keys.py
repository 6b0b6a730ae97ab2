import re

from appliance.keys import Keyring, authenticate, create_key
from appliance.secrets_ import hash_secret, verify_secret
from appliance.store import Database


def test_key_format_and_only_a_scrypt_hash_stored(tmp_path):
    db = Database(tmp_path / "a.db")
    user = db.create_user("alice")
    key = create_key(db, user["id"], "laptop")
    assert re.fullmatch(r"ul_[0-9a-f]{40}", key)
    dump = "\n".join(db.db.conn.iterdump())
    assert key not in dump and key[11:] not in dump
    stored = db.query_one("SELECT key_hash, prefix FROM api_keys")
    assert stored["key_hash"].startswith("scrypt$") and stored["prefix"] == key[:11]
    listed = db.api_keys(user["id"])
    assert listed[0]["prefix"] == key[:11] and listed[0]["name"] == "laptop"


def test_authenticate(tmp_path):
    db = Database(tmp_path / "a.db")
    user = db.create_user("alice")
    key = create_key(db, user["id"])
    assert authenticate(db, key)["username"] == "alice"
    wrong = key[:-1] + ("0" if key[-1] != "0" else "1")  # same prefix, other secret
    assert authenticate(db, wrong) is None
    assert authenticate(db, "ul_short") is None
    assert authenticate(db, key.upper()) is None


def test_revoked_keys_stop_working_at_once(tmp_path):
    db = Database(tmp_path / "a.db")
    user = db.create_user("alice")
    keyring = Keyring(db)
    made = keyring.create(user["id"], "ci")
    assert keyring.authenticate(made["key"])["key_id"] == made["id"]  # now remembered
    assert keyring.revoke(user["id"], made["id"]) is True
    assert keyring.authenticate(made["key"]) is None
    assert keyring.revoke(user["id"], made["id"]) is False


def test_keys_are_unique(tmp_path):
    db = Database(tmp_path / "a.db")
    user = db.create_user("alice")
    keys = {create_key(db, user["id"]) for _ in range(20)}
    assert len(keys) == 20


def test_password_hashes_are_salted_and_verified():
    first, second = hash_secret("correct horse"), hash_secret("correct horse")
    assert first != second and first.startswith("scrypt$16384$")
    assert verify_secret("correct horse", first)
    assert not verify_secret("correct horsE", first)
    assert not verify_secret("anything", None)
