import os
import sqlite3
import threading

import pytest

from appliance.blobs import BlobStore, content_hash
from appliance.errors import Invalid
from appliance.store import Database


def test_database_is_wal_and_migrated_once(tmp_path):
    db = Database(tmp_path / "a.db")
    assert db.scalar("PRAGMA journal_mode") == "wal"
    tables = {
        r["name"] for r in db.query("SELECT name FROM sqlite_master WHERE type='table'")
    }
    assert {
        "users",
        "api_keys",
        "datasets",
        "images",
        "jobs",
        "models",
        "exports",
    } <= tables
    Database(tmp_path / "a.db")  # a second open applies nothing twice
    from appliance.store._schema import MIGRATIONS

    assert db.scalar("SELECT count(*) FROM migrations") == len(MIGRATIONS)


def test_atomic_rolls_back_everything_on_error(tmp_path):
    db = Database(tmp_path / "a.db")
    user = db.create_user("alice")
    with pytest.raises(RuntimeError):
        with db.atomic() as conn:
            conn["projects"].insert(
                {
                    "id": "P" * 20,
                    "owner_id": user["id"],
                    "slug": "p",
                    "name": "p",
                    "visibility": "private",
                    "created_at": "x",
                    "updated_at": "x",
                }
            )
            raise RuntimeError("boom")
    assert db.scalar("SELECT count(*) FROM projects") == 0


def test_json_columns_round_trip(tmp_path):
    db = Database(tmp_path / "a.db")
    user = db.create_user("alice")
    ds = db.create_dataset(
        owner_id=user["id"],
        slug="d",
        name="d",
        task="detect",
        visibility="private",
        class_names=["cat", "dog"],
        metadata={"k": [1, 2]},
    )
    again = db.dataset(ds["id"])
    assert again["class_names"] == ["cat", "dog"]
    assert again["metadata"] == {"k": [1, 2]}
    assert again["owner"] == "alice"


def test_unique_slug_per_owner(tmp_path):
    db = Database(tmp_path / "a.db")
    user = db.create_user("alice")
    fields = dict(
        owner_id=user["id"], slug="d", name="d", task="detect", visibility="private"
    )
    db.create_dataset(**fields)
    with pytest.raises(sqlite3.IntegrityError):
        db.create_dataset(**fields)


def test_concurrent_writers_from_threads(tmp_path):
    db = Database(tmp_path / "a.db")
    user = db.create_user("alice")
    errors = []

    def work(n):
        try:
            for i in range(20):
                db.create_project(
                    owner_id=user["id"],
                    slug=f"p{n}-{i}",
                    name="x",
                    visibility="private",
                )
        except Exception as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert db.scalar("SELECT count(*) FROM projects") == 80


def test_blob_store_dedups_by_content(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    digest, path = store.put_image(b"same bytes", "jpg")
    digest2, path2 = store.put_image(b"same bytes", "jpg")
    assert digest == digest2 == content_hash(b"same bytes")
    assert path == path2 and path.read_bytes() == b"same bytes"
    assert len(digest) == 32


@pytest.mark.parametrize(
    "segment", ["..", "../x", "a/b", "", ".hidden", "x\x00y", "a..b"]
)
def test_blob_store_rejects_unsafe_segments(tmp_path, segment):
    store = BlobStore(tmp_path / "blobs")
    with pytest.raises(Invalid):
        store.path("models", segment)


def test_blob_writer_leaves_nothing_on_failure(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    target = store.path("models", "m1", "best.pt")
    with pytest.raises(RuntimeError):
        with store.writer(target) as handle:
            handle.write(b"half")
            raise RuntimeError("crash mid-write")
    assert not target.exists()
    assert os.listdir(store.tmp) == []
