"""run_ingest on real files, a real database and a real blob store."""

from __future__ import annotations

import io
import tarfile

import pytest
from conftest import base_files, jpeg_bytes, write_zip

from appliance.blobs import BlobStore
from appliance.errors import Invalid
from appliance.ingest import IngestOptions, run_ingest
from appliance.store import Database


@pytest.fixture
def store(tmp_path):
    db = Database(tmp_path / "a.db")
    user = db.create_user("alice")
    dataset = db.create_dataset(
        owner_id=user["id"], slug="d", name="d", task="detect", visibility="private"
    )
    return db, BlobStore(tmp_path / "blobs"), dataset["id"]


def _ingest(store, path, **options):
    db, blobs, dataset_id = store
    job = db.create_job("ingest", dataset_id, None)
    progress = []
    summary = run_ingest(
        db,
        blobs,
        dataset_id,
        job["id"],
        path,
        IngestOptions(**options),
        lambda p, m: progress.append(p),
    )
    return (
        summary,
        db.dataset(dataset_id),
        db.ingest_report(dataset_id, job["id"]),
        progress,
    )


@pytest.mark.parametrize("prefix", ["", "ds/"])
def test_flat_root_and_one_folder_down_give_the_same_dataset(store, tmp_path, prefix):
    summary, dataset, report, progress = _ingest(
        store, write_zip(tmp_path / "a.zip", base_files(prefix))
    )
    db = store[0]
    stats = db.dataset_stats(dataset["id"])
    assert summary["added"] == 4 and summary["errors"] == 0
    assert (stats["train"], stats["val"], stats["labeled"], stats["annotations"]) == (
        2,
        2,
        4,
        4,
    )
    assert dataset["class_names"] == ["a", "b"] and dataset["status"] == "ready"
    assert {r["verdict"] for r in report} == {"accepted"}
    # every file has its verdict: 4 images, their 4 label files and the YAML
    assert len(report) == 9
    assert progress and progress[-1] >= 90


def test_tgz_with_spaces_in_names(store, tmp_path):
    files = {
        k.replace("ds/", "dates segment/").replace("/a.", "/a 01."): v
        for k, v in base_files().items()
    }
    path = tmp_path / "a.tgz"
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    summary, dataset, _, _ = _ingest(store, path)
    assert summary["added"] == 4 and summary["paired"] == 4
    names = {r["name"] for r in store[0].all_images(dataset["id"])}
    assert "a 01.jpg" in names


def test_every_file_gets_a_verdict(store, tmp_path):
    files = base_files()
    files["ds/images/train/e.png"] = jpeg_bytes(fmt="PNG", mode="RGB")
    files["ds/labels/train/e.txt"] = b"0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n"
    files["ds/images/train/f.jpg"] = b""
    files["ds/labels/train/g.txt"] = b"0 0.5 0.5 0.2 0.2\n"
    files["ds/notes.docx"] = b"x"
    summary, _, report, _ = _ingest(store, write_zip(tmp_path / "a.zip", files))
    verdicts = {r["path"]: (r["verdict"], r["reason"]) for r in report}
    assert verdicts["ds/images/train/e.png"][0] == "fixed"
    assert verdicts["ds/images/train/f.jpg"] == ("rejected", "not_an_image")
    assert verdicts["ds/labels/train/g.txt"] == ("rejected", "orphan_label")
    assert verdicts["ds/notes.docx"] == ("rejected", "unsupported_file")
    assert summary["added"] == 5
    fixed = next(r for r in report if r["path"] == "ds/images/train/e.png")
    assert "duplicate" in fixed["detail"]


def test_no_yaml_names_classes_by_placeholder(store, tmp_path):
    files = {k: v for k, v in base_files().items() if not k.endswith(".yaml")}
    files["ds/labels/train/b.txt"] = b"2 0.5 0.5 0.2 0.2\n"
    _, dataset, _, _ = _ingest(store, write_zip(tmp_path / "a.zip", files))
    assert dataset["class_names"] == ["class0", "class1", "class2"]


def test_images_only_is_an_unlabeled_dataset(store, tmp_path):
    files = {f"pics/{n}.jpg": jpeg_bytes(color=(n * 40, 0, 0)) for n in range(3)}
    summary, dataset, _, _ = _ingest(store, write_zip(tmp_path / "a.zip", files))
    assert summary["added"] == 3 and summary["paired"] == 0
    assert store[0].dataset_stats(dataset["id"])["labeled"] == 0


def test_nothing_usable_fails_the_dataset_with_reasons(store, tmp_path):
    summary, dataset, _, _ = _ingest(
        store, write_zip(tmp_path / "a.zip", {"ds/x.jpg": b"nope"})
    )
    assert dataset["status"] == "failed"
    assert "not_an_image: 1" in dataset["processing_error"]["message"]


def test_a_crash_mid_ingest_leaves_the_dataset_untouched(store, tmp_path, monkeypatch):
    db, blobs, dataset_id = store
    _ingest(store, write_zip(tmp_path / "a.zip", base_files()))
    before = db.dataset_stats(dataset_id)
    files = base_files()
    files["ds/data.yaml"] = b"names: [a, b]\n"
    files = {
        k.replace(".jpg", "2.jpg").replace(".txt", "2.txt"): v for k, v in files.items()
    }
    for name in list(files):
        if name.endswith(".jpg"):
            files[name] = jpeg_bytes(color=(9, 9, len(name)))

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(db, "replace_images", crash)
    with pytest.raises(OSError):
        _ingest(store, write_zip(tmp_path / "b.zip", files))
    assert db.dataset_stats(dataset_id) == before


def test_bad_yaml_is_a_clear_error(store, tmp_path):
    files = base_files()
    files["ds/data.yaml"] = b"names: [a, b\n"
    with pytest.raises(Invalid, match="not valid YAML"):
        _ingest(store, write_zip(tmp_path / "a.zip", files))


def test_absurd_class_counts_are_refused_fast(store, tmp_path):
    import time

    files = base_files()
    files["ds/data.yaml"] = b"nc: 3000000\n"
    started = time.monotonic()
    with pytest.raises(Invalid, match="limit"):
        _ingest(store, write_zip(tmp_path / "a.zip", files))
    files = {k: v for k, v in base_files().items() if not k.endswith(".yaml")}
    files["ds/labels/train/a.txt"] = b"2999999 0.5 0.5 0.2 0.2\n"
    summary, dataset, _, _ = _ingest(store, write_zip(tmp_path / "b.zip", files))
    assert summary["skippedCounts"] == {"class_out_of_range": 1}
    assert dataset["class_names"] == ["class0"]
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "row", [b"nan 0.5 0.5 0.2 0.2\n", b"inf 0.5 0.5 0.2 0.2\n", b"0 nan 0.5 0.2 0.2\n"]
)
def test_non_finite_values_reject_only_their_file(store, tmp_path, row):
    files = base_files()
    files["ds/labels/train/a.txt"] = row
    summary, dataset, _, _ = _ingest(store, write_zip(tmp_path / "a.zip", files))
    # The image stays, unlabeled, with the label's reason as its error.
    assert summary["added"] == 4 and summary["skippedCounts"] == {"malformed_row": 1}
    assert dataset["status"] == "ready"
    (image,) = [i for i in store[0].all_images(dataset["id"]) if i["name"] == "a.jpg"]
    assert image["labels"] is None and image["error"].startswith("malformed_row")


def test_a_damaged_member_rejects_only_itself(store, tmp_path):
    path = write_zip(tmp_path / "a.zip", base_files())
    raw = bytearray(path.read_bytes())
    at = raw.find(b"ds/images/train/a.jpg") + len("ds/images/train/a.jpg") + 40
    raw[at] ^= 0xFF  # corrupt a byte of that image's compressed data: a bad CRC
    path.write_bytes(bytes(raw))
    summary, _, report, _ = _ingest(store, path)
    verdicts = {r["path"]: r["reason"] for r in report if r["verdict"] == "rejected"}
    assert summary["added"] == 3
    assert list(verdicts) == ["ds/images/train/a.jpg"]
    assert verdicts["ds/images/train/a.jpg"] in ("unreadable_member", "corrupt_image")


@pytest.mark.parametrize(
    "policy,count", [("skip", 4), ("keep_both", 8), ("replace", 4)]
)
def test_conflict_policies(store, tmp_path, policy, count):
    db = store[0]
    _ingest(store, write_zip(tmp_path / "a.zip", base_files()))
    files = base_files()
    files["ds/labels/train/a.txt"] = b"1 0.5 0.5 0.5 0.5\n"
    _ingest(store, write_zip(tmp_path / "b.zip", files), conflict_policy=policy)
    images = db.all_images(store[2])
    assert len(images) == count
    a_labels = [i["labels"] for i in images if i["name"] == "a.jpg"]
    if policy == "replace":
        assert a_labels == [[{"classId": 1, "bbox": [0.5, 0.5, 0.5, 0.5]}]]
    if policy == "skip":
        assert a_labels == [[{"classId": 0, "bbox": [0.5, 0.5, 0.25, 0.25]}]]


def test_class_names_match_by_name_across_ingests(store, tmp_path):
    _ingest(store, write_zip(tmp_path / "a.zip", base_files()))
    files = {k.replace("ds/", "two/"): v for k, v in base_files().items()}
    files["two/data.yaml"] = b"names: [b, c]\n"
    files = {
        k.replace(".jpg", "x.jpg").replace(".txt", "x.txt"): v for k, v in files.items()
    }
    for name in list(files):
        if name.endswith(".jpg"):
            files[name] = jpeg_bytes(color=(len(name), 99, 1))
    _, dataset, _, _ = _ingest(store, write_zip(tmp_path / "b.zip", files))
    assert dataset["class_names"] == ["a", "b", "c"]
    new = [i for i in store[0].all_images(dataset["id"]) if "x" in i["name"]]
    assert {lab["classId"] for i in new for lab in i["labels"]} == {1}  # b, not a
