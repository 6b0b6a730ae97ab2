"""The cases file's sections A-D, one test per case (named after its number), run
through run_ingest on a real database and blob store."""

from __future__ import annotations

import io
import zipfile

import pytest
from conftest import base_files, jpeg_bytes, write_zip
from PIL import Image

from appliance.blobs import BlobStore
from appliance.errors import Invalid
from appliance.ingest import IngestOptions, run_ingest
from appliance.store import Database


@pytest.fixture
def store(tmp_path):
    db = Database(tmp_path / "a.db")
    user = db.create_user("alice")
    ids = {}
    for task in ("detect", "segment", "pose", "obb", "classify"):
        row = db.create_dataset(
            owner_id=user["id"], slug=task, name=task, task=task, visibility="private"
        )
        ids[task] = row["id"]
    return db, BlobStore(tmp_path / "blobs"), ids


def ingest(store, tmp_path, files, task="detect", **options):
    db, blobs, ids = store
    path = write_zip(tmp_path / f"{len(list(tmp_path.iterdir()))}.zip", files)
    job = db.create_job("ingest", ids[task], None)
    summary = run_ingest(
        db,
        blobs,
        ids[task],
        job["id"],
        path,
        IngestOptions(**options),
        lambda p, m: None,
    )
    report = {r["path"]: r for r in db.ingest_report(ids[task], job["id"])}
    return summary, db.dataset(ids[task]), report


def images(store, task="detect"):
    return {i["name"]: i for i in store[0].all_images(store[2][task])}


def _distinct(key: str) -> bytes:
    """A JPEG that differs from any other key's (JPEG merges close colours)."""
    n = sum(map(ord, key)) * 37
    return jpeg_bytes(color=(n % 256, (n // 7) % 256, (n // 3) % 256))


def rebase(files, old, new):
    return {k.replace(old, new, 1): v for k, v in files.items()}


# -- A. archive layout and naming -------------------------------------------


def test_case_01_flat_root_and_any_zip_name_give_the_same_counts(store, tmp_path):
    flat, _, _ = ingest(store, tmp_path, base_files(""))
    folder, _, _ = ingest(
        store, tmp_path, rebase(base_files(), "ds/", "bar/"), "segment"
    )
    assert flat["added"] == folder["added"] == 4
    assert any("dataset root: bar" in w for w in folder["warnings"])


def test_case_02_root_nested_deeper_is_found_and_reported(store, tmp_path):
    summary, dataset, _ = ingest(
        store, tmp_path, rebase(base_files(), "ds/", "outer/inner/")
    )
    assert summary["added"] == 4 and summary["paired"] == 4
    assert dataset["class_names"] == ["a", "b"]
    assert any("outer/inner" in w for w in summary["warnings"])


def test_case_03_mac_junk_is_never_a_yaml_image_or_label(store, tmp_path):
    files = base_files()
    files["__MACOSX/ds/._data.yaml"] = b"\0\5\26\7"
    files["__MACOSX/ds/._a.jpg"] = b"\0\5\26\7"
    files["ds/.DS_Store"] = b"junk"
    files["ds/images/Thumbs.db"] = b"junk"
    files["ds/desktop.ini"] = b"junk"
    summary, _, report = ingest(store, tmp_path, files)
    assert summary["added"] == 4 and summary["errors"] == 0
    assert not any("MACOSX" in p or "DS_Store" in p or "Thumbs" in p for p in report)


def test_case_04_misspelt_yaml_is_named_and_absolute_path_ignored(store, tmp_path):
    files = base_files()
    files["ds/data.yalm"] = files.pop("ds/data.yaml")
    summary, dataset, _ = ingest(store, tmp_path, files)
    assert summary["added"] == 4
    assert any("data.yalm" in w and "did you mean" in w for w in summary["warnings"])
    assert dataset["class_names"] == ["class0"]
    files = base_files()
    files["ds/data.yaml"] = (
        b"path: /home/someone/ds\ntrain: images/train\nval: images/val\nnames: [a, b]\n"
    )
    files = {
        k.replace(".jpg", "2.jpg").replace(".txt", "2.txt"): v for k, v in files.items()
    }
    files = {k: (_distinct(k) if k.endswith(".jpg") else v) for k, v in files.items()}
    summary, _, _ = ingest(store, tmp_path, files, "segment")
    assert summary["added"] == 4 and summary["splits"] == {"train": 2, "val": 2}


def test_case_05a_images_only_is_a_raw_unlabeled_dataset(store, tmp_path):
    files = {
        k: v for k, v in base_files().items() if k.endswith(".jpg") and "train" in k
    }
    summary, dataset, _ = ingest(store, tmp_path, files)
    assert (
        summary["added"] == 2
        and summary["unlabeled"] == 2
        and summary["format"] == "raw"
    )
    assert dataset["status"] == "ready"


@pytest.mark.parametrize(
    "layout",
    [
        "cls/{split}/{label}/{stem}.jpg",
        "cls/{label}/{split}/{stem}.jpg",
    ],
)
def test_case_05b_classify_trees_need_no_yaml(store, tmp_path, layout):
    files = {}
    for n, (split, label) in enumerate(
        [("train", "cat"), ("train", "dog"), ("val", "cat"), ("valid", "dog")]
    ):
        name = layout.format(split=split, label=label, stem=f"x{n}")
        files[name] = jpeg_bytes(color=(n * 50, 10, 10))
    summary, dataset, _ = ingest(store, tmp_path, files, "classify")
    assert dataset["class_names"] == ["cat", "dog"]
    assert summary["splits"] == {"train": 2, "val": 2}
    labels = {i["name"]: i["labels"] for i in images(store, "classify").values()}
    assert labels["x1.jpg"] == [{"classId": 1}] and labels["x3.jpg"] == [{"classId": 1}]


def test_case_05b_class_img_tree_switches_an_empty_detect_dataset(store, tmp_path):
    files = {
        f"pets/{label}/{n}.jpg": jpeg_bytes(color=(n * 40, 1, 1))
        for n, label in enumerate(["cat", "dog", "cat"])
    }
    summary, dataset, _ = ingest(store, tmp_path, files)
    assert dataset["task"] == "classify" and summary["task"] == "classify"
    assert any("changed from detect to classify" in w for w in summary["warnings"])


def test_case_06_roboflow_valid_is_val_and_paths_stay_inside(store, tmp_path):
    files = {
        "data.yaml": b"train: ../train/images\nval: ../valid/images\ntest: ../../../etc\nnames: [a, b]\n"
    }
    for split, stems in {"train": "ab", "valid": "cd"}.items():
        for stem in stems:
            files[f"{split}/images/{stem}.jpg"] = _distinct(stem)
            files[f"{split}/labels/{stem}.txt"] = b"0 0.5 0.5 0.25 0.25\n"
    summary, _, _ = ingest(store, tmp_path, files)
    assert summary["splits"] == {"train": 2, "val": 2} and summary["movedToVal"] == 0


def test_case_07_spaces_in_names_are_legal(store, tmp_path):
    files = rebase(base_files(), "ds/", "dates segment/")
    files = {k.replace("/a.", "/a 01."): v for k, v in files.items()}
    summary, _, _ = ingest(store, tmp_path, files)
    assert summary["added"] == 4 and summary["paired"] == 4
    assert images(store)["a 01.jpg"]["labels"]


def test_case_09_nested_images_folder_and_sibling_labels(store, tmp_path):
    files = {}
    for name, data in base_files("").items():
        if name.startswith("images/train/"):
            name = name.replace("images/train/", "images/train/images/")
        if name.startswith("labels/train/"):
            name = name.replace("labels/train/", "labels/train/images/")
        files[name] = data
    files["extra/images/x.jpg"] = jpeg_bytes(color=(1, 99, 1))
    files["extra/images/x.txt"] = b"1 0.5 0.5 0.2 0.2\n"
    files["elsewhere/y.txt"] = b"0 0.5 0.5 0.1 0.1\n"
    files["images/val/y.jpg"] = jpeg_bytes(color=(99, 99, 1))
    summary, _, _ = ingest(store, tmp_path, files)
    assert summary["paired"] == 5 and summary["unlabeled"] == 1
    assert any(
        "images/val/y.jpg has no label" in w and "elsewhere/y.txt" in w
        for w in summary["warnings"]
    )


# -- B. YAML, classes and task metadata -------------------------------------


@pytest.mark.parametrize(
    "yaml_text,outcome",
    [
        (b"nc: 3\nnames: [a, b]\n", "nc: 3"),
        (b"names: {}\n", ["class0"]),
        (b"names: [a, b]\n", ["a", "b"]),
        (b"names: {0: a, 2: c}\n", ["a", "class1", "c"]),
    ],
)
def test_case_11_names_list_dict_gaps_and_nc(store, tmp_path, yaml_text, outcome):
    files = base_files()
    files["ds/data.yaml"] = yaml_text
    if isinstance(outcome, str):
        with pytest.raises(Invalid, match=outcome):
            ingest(store, tmp_path, files)
        return
    summary, dataset, _ = ingest(store, tmp_path, files)
    if outcome == ["class0"]:
        # Zero classes: every label's class is out of range; the images stay.
        assert summary["skippedCounts"] == {"class_out_of_range": 4}
        assert dataset["class_names"] == []
    else:
        assert dataset["class_names"] == outcome


def test_case_12_class_out_of_range_flagged_or_extended(store, tmp_path):
    files = base_files()
    files["ds/labels/train/b.txt"] = b"2 0.5 0.5 0.2 0.2\n"
    summary, dataset, report = ingest(store, tmp_path, files)
    assert (
        summary["skippedCounts"] == {"class_out_of_range": 1} and summary["added"] == 4
    )
    assert report["ds/labels/train/b.txt"]["verdict"] == "rejected"
    assert images(store)["b.jpg"]["error"].startswith("class_out_of_range")
    files = {k.replace(".", "2."): v for k, v in files.items()}
    files = {k: (_distinct(k) if k.endswith(".jpg") else v) for k, v in files.items()}
    files["ds/data2.yaml"] = files.pop("ds/data2.yaml")
    summary, dataset, _ = ingest(store, tmp_path, files, extend_classes=True)
    assert dataset["class_names"] == ["a", "b", "class2"] and summary["errors"] == 0


def test_case_14_classify_index_built_once_by_name(store, tmp_path):
    files = {f"train/{c}/t{c}.jpg": jpeg_bytes(color=(ord(c), 1, 1)) for c in "abc"}
    files.update({f"val/{c}/v{c}.jpg": jpeg_bytes(color=(1, ord(c), 1)) for c in "ac"})
    summary, dataset, _ = ingest(store, tmp_path, files, "classify")
    assert dataset["class_names"] == ["a", "b", "c"]
    assert images(store, "classify")["vc.jpg"]["labels"] == [{"classId": 2}]
    assert "class b absent from val" in summary["warnings"]


def test_case_5_classify_tree_with_notes_beside_it(store, tmp_path):
    """Text files that are not named like an image (a README, a class list) do not
    turn a classification tree into a YOLO upload."""
    colors = iter([(200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0)])
    files = {
        f"{split}/{c}/{split[0]}{c}.jpg": jpeg_bytes(color=next(colors))
        for split in ("train", "val")
        for c in "ab"
    }
    files.update({"README.txt": b"cats and dogs\n", "classes.txt": b"a\nb\n"})
    summary, dataset, _ = ingest(store, tmp_path, files, "classify")
    assert dataset["task"] == "classify" and dataset["class_names"] == ["a", "b"]
    assert images(store, "classify")["vb.jpg"]["labels"] == [{"classId": 1}]
    assert summary["added"] == 4


def _pose_files(yaml_extra: bytes) -> dict[str, bytes]:
    files = base_files()
    files["ds/data.yaml"] = (
        b"train: images/train\nval: images/val\nnames: [a]\n" + yaml_extra
    )
    for name in files:
        if name.endswith(".txt"):
            files[name] = b"0 .5 .5 .2 .2 .4 .4 2 .6 .6 2\n"
    return files


def test_case_15_pose_kpt_shape_inferred_or_checked(store, tmp_path):
    summary, dataset, _ = ingest(store, tmp_path, _pose_files(b""), "pose")
    assert summary["errors"] == 0 and dataset["metadata"]["kptShape"] == [2, 3]
    label = images(store, "pose")["a.jpg"]["labels"][0]
    assert label["keypoints"] == [0.4, 0.4, 2, 0.6, 0.6, 2]
    files = rebase(_pose_files(b"kpt_shape: [2, 2]\nflip_idx: [1, 0]\n"), "ds/", "p/")
    summary, dataset, report = ingest(store, tmp_path, files, "detect")
    # An empty detect dataset with a pose YAML becomes a pose dataset ...
    assert dataset["task"] == "pose" and dataset["metadata"]["flipIdx"] == [1, 0]
    # ... and rows that do not fit its kpt_shape are refused, naming both counts.
    detail = report["p/labels/train/a.txt"]["detail"]
    assert summary["skippedCounts"] == {"kpt_shape_mismatch": 4}
    assert "expects 9 columns, found 11" in detail


def test_task_mismatch_rejects_labels_of_a_non_empty_dataset(store, tmp_path):
    ingest(store, tmp_path, base_files())
    files = rebase(_pose_files(b"kpt_shape: [2, 3]\n"), "ds/", "q/")
    files = {k: (_distinct(k) if k.endswith(".jpg") else v) for k, v in files.items()}
    summary, dataset, _ = ingest(store, tmp_path, files, conflict_policy="keep_both")
    assert dataset["task"] == "detect"
    assert summary["skippedCounts"] == {"task_mismatch": 4}


def test_obb_rows_switch_an_empty_detect_dataset(store, tmp_path):
    files = base_files()
    for name in files:
        if name.endswith(".txt"):
            files[name] = b"0 0.1 0.1 0.6 0.1 0.6 0.4 0.1 0.4\n"
    summary, dataset, _ = ingest(store, tmp_path, files)
    assert dataset["task"] == "obb" and summary["errors"] == 0
    assert images(store)["a.jpg"]["labels"][0]["obb"][:2] == [0.1, 0.1]


# -- C. label-row content ---------------------------------------------------


def test_case_16_overshoot_clipped_pixel_coordinates_rejected(store, tmp_path):
    files = base_files()
    files["ds/labels/train/a.txt"] = b"0 0.99 0.5 0.04 0.2\n"
    files["ds/labels/train/b.txt"] = b"0 32 32 16 16\n"
    summary, _, report = ingest(store, tmp_path, files)
    assert report["ds/images/train/a.jpg"]["verdict"] == "fixed"
    assert "clipped" in report["ds/images/train/a.jpg"]["detail"]
    assert report["ds/labels/train/b.txt"]["reason"] == "pixel_coordinates"
    assert "divide" in report["ds/labels/train/b.txt"]["detail"]


def test_case_19_polygons_in_detect_mixed_rows_and_boxes_in_segment(store, tmp_path):
    polygon = b"0 0.1 0.1 0.3 0.1 0.3 0.3 0.1 0.3\n"
    files = base_files()
    files["ds/labels/train/a.txt"] = polygon
    files["ds/labels/train/b.txt"] = b"0 .5 .5 .2 .2\n" + polygon
    summary, _, report = ingest(store, tmp_path, files)
    a = images(store)["a.jpg"]["labels"][0]
    assert a["bbox"] == [0.2, 0.2, 0.2, 0.2] and len(a["segments"]) == 8
    assert report["ds/labels/train/b.txt"]["reason"] == "mixed_row_types"
    assert summary["skippedCounts"] == {"mixed_row_types": 1}
    files = base_files()
    for name in files:
        if name.endswith(".txt"):
            files[name] = polygon
    files["ds/labels/val/d.txt"] = b"0 .5 .5 .2 .2\n"
    summary, _, report = ingest(store, tmp_path, files, "segment")
    assert summary["skippedCounts"] == {"box_in_segment_dataset": 1}
    kept = [i["labels"] for i in images(store, "segment").values() if i["labels"]]
    assert len(kept) == 3 and all("segments" in lab[0] for lab in kept)


def test_case_20_background_and_unlabeled_are_counted_apart(store, tmp_path):
    files = base_files()
    files["ds/labels/train/a.txt"] = b""
    files["ds/labels/train/b.txt"] = b"\n  \n"
    del files["ds/labels/val/c.txt"]
    summary, _, _ = ingest(store, tmp_path, files)
    assert (summary["background"], summary["unlabeled"], summary["labeled"]) == (
        2,
        1,
        1,
    )


def test_case_21_duplicate_rows_removed_and_reported(store, tmp_path):
    files = base_files()
    files["ds/labels/train/a.txt"] = b"0 0.5 0.5 0.25 0.25\n0 0.5 0.5 0.25 0.25\n"
    _, _, report = ingest(store, tmp_path, files)
    assert report["ds/images/train/a.jpg"]["detail"] == "removed 1 duplicate row"
    assert len(images(store)["a.jpg"]["labels"]) == 1


# -- D. image content -------------------------------------------------------


def test_case_22_truncated_jpeg_is_restored_as_a_copy(store, tmp_path):
    files = base_files()
    noise = Image.frombytes("RGB", (128, 128), bytes(range(256)) * 192)
    buffer = io.BytesIO()
    noise.save(buffer, "JPEG")
    whole = buffer.getvalue()
    files["ds/images/train/a.jpg"] = whole[: len(whole) * 6 // 10]
    files["ds/images/train/b.jpg"] = whole[:-2]  # only the end marker missing
    summary, _, report = ingest(store, tmp_path, files)
    for stem in "ab":
        verdict = report[f"ds/images/train/{stem}.jpg"]
        assert (
            verdict["verdict"] == "fixed"
            and "truncated_jpeg_restored" in verdict["detail"]
        )
    stored = store[1].image_path(images(store)["a.jpg"]["hash"], "jpg").read_bytes()
    assert stored.endswith(b"\xff\xd9")
    assert (
        files["ds/images/train/a.jpg"] == whole[: len(whole) * 6 // 10]
    )  # source untouched


def test_case_23_sniffed_formats_and_non_images(store, tmp_path):
    files = base_files()
    files["ds/images/train/b.jpg"] = jpeg_bytes(fmt="PNG", color=(5, 6, 7))
    files["ds/images/val/c.jpg"] = b""
    files["ds/images/val/d.png"] = b"hi\n"
    files["ds/labels/val/d.txt"] = b"0 0.5 0.5 0.2 0.2\n"
    _, _, report = ingest(store, tmp_path, files)
    assert report["ds/images/train/b.jpg"]["verdict"] == "accepted"
    assert "format=png" in report["ds/images/train/b.jpg"]["detail"]
    assert images(store)["b.jpg"]["ext"] == "png"
    assert report["ds/images/val/c.jpg"]["reason"] == "not_an_image"
    assert report["ds/images/val/d.png"]["reason"] == "not_an_image"


def test_case_24_exif_orientation_applied_labels_in_displayed_frame(store, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    raw = Image.new("RGB", (80, 40), (255, 255, 255))
    raw.paste((255, 0, 0), (0, 0, 10, 10))  # a red corner, top-left as stored
    buffer = io.BytesIO()
    raw.save(buffer, "JPEG", exif=exif)
    files = base_files()
    files["ds/images/train/a.jpg"] = buffer.getvalue()
    files["ds/labels/train/a.txt"] = b"0 0.25 0.5 0.2 0.2\n"
    _, _, report = ingest(store, tmp_path, files)
    row = images(store)["a.jpg"]
    assert (row["width"], row["height"]) == (40, 80)
    assert "exif_orientation_applied" in report["ds/images/train/a.jpg"]["detail"]
    assert row["labels"] == [{"classId": 0, "bbox": [0.25, 0.5, 0.2, 0.2]}]
    shown = Image.open(store[1].image_path(row["hash"], row["ext"]))
    assert shown.getpixel((35, 3))[0] > 200 and shown.getpixel((35, 3))[1] < 80


@pytest.mark.parametrize("mode", ["L", "RGBA", "LA", "I;16", "P", "CMYK"])
def test_case_25_every_colour_mode_becomes_rgb(store, tmp_path, mode):
    image = Image.new(mode, (64, 64))
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "L" else "PNG")
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    files = base_files()
    files["ds/images/train/a.jpg"] = buffer.getvalue()
    _, _, report = ingest(store, tmp_path, files)
    row = images(store)["a.jpg"]
    stored = Image.open(store[1].image_path(row["hash"], row["ext"]))
    assert (
        stored.mode == "RGB" and report["ds/images/train/a.jpg"]["verdict"] == "fixed"
    )


def test_too_small_rejected_too_large_resized_and_thumbnails_made(store, tmp_path):
    files = base_files()
    files["ds/images/train/a.jpg"] = jpeg_bytes(size=(4, 4))
    files["ds/images/train/b.jpg"] = jpeg_bytes(size=(5000, 100))
    _, _, report = ingest(store, tmp_path, files)
    assert report["ds/images/train/a.jpg"]["reason"] == "too_small"
    b = images(store)["b.jpg"]
    assert b["width"] == 4096 and "resized" in report["ds/images/train/b.jpg"]["detail"]
    thumb = store[1].path("thumbnails", b["hash"][:2], f"{b['hash']}.jpg")
    assert max(Image.open(thumb).size) == 256


def test_identical_content_is_stored_once(store, tmp_path):
    files = base_files()
    files["ds/images/train/b.jpg"] = files["ds/images/train/a.jpg"]
    summary, _, report = ingest(store, tmp_path, files, conflict_policy="keep_both")
    blobs = list((store[1].root / "images").rglob("*.jpg"))
    assert summary["added"] == 4 and len(blobs) == 3


def test_s2_voc_xml_is_detected_not_imported(store, tmp_path):
    files = {k: v for k, v in base_files().items() if not k.endswith((".txt", ".yaml"))}
    for name in list(files):
        xml = name.replace("images", "annotations").replace(".jpg", ".xml")
        files[xml] = b"<annotation><object><name>a</name></object></annotation>"
    summary, _, report = ingest(store, tmp_path, files)
    assert summary["added"] == 4 and summary["unlabeled"] == 4
    assert any("Pascal VOC" in w for w in summary["warnings"])
    assert report["ds/annotations/train/a.xml"]["reason"] == "voc_not_imported"


def test_s5_empty_val_gets_a_seeded_tenth_of_train(store, tmp_path):
    files = {}
    for n in range(12):
        files[f"images/train/{n}.jpg"] = jpeg_bytes(color=(n * 20, 3, 3))
        files[f"labels/train/{n}.txt"] = b"0 0.5 0.5 0.2 0.2\n"
    summary, _, _ = ingest(store, tmp_path, files)
    assert summary["movedToVal"] == 1 and summary["splits"] == {"train": 11, "val": 1}
    assert any("moved 1 train images to val" in w for w in summary["warnings"])
    files = {
        f"train/{c}/{n}.jpg": jpeg_bytes(color=(n * 20, ord(c), 3))
        for n in range(3)
        for c in "ab"
    }
    summary, _, _ = ingest(store, tmp_path, files, "classify")
    assert summary["movedToVal"] == 0 and summary["splits"] == {"train": 6}


def test_dry_run_reports_everything_and_stores_nothing(store, tmp_path):
    files = base_files()
    files["ds/images/train/x.jpg"] = b"nope"
    summary, dataset, report = ingest(store, tmp_path, files, dry_run=True)
    assert summary["added"] == 4 and summary["skippedCounts"] == {"not_an_image": 1}
    assert len(summary["files"]) == 10 and report == {}  # with labels and YAML
    assert images(store) == {} and dataset["ingest_summary"] is None
    assert not (store[1].root / "images").exists()
    assert not (store[1].root / "thumbnails").exists()


def test_class_mapping_renames_merges_and_drops(store, tmp_path):
    files = base_files()
    files["ds/data.yaml"] = b"names: [a, b, c]\n"
    files["ds/labels/train/a.txt"] = b"0 .5 .5 .2 .2\n1 .5 .5 .3 .3\n2 .4 .4 .1 .1\n"
    summary, dataset, _ = ingest(
        store, tmp_path, files, class_mapping={"a": "apple", "b": 0, "c": None}
    )
    assert dataset["class_names"] == ["apple"]
    assert [lab["classId"] for lab in images(store)["a.jpg"]["labels"]] == [0, 0]
    assert summary["droppedAnnotations"] == 1


def test_image_metadata_is_stored_per_path(store, tmp_path):
    ingest(
        store,
        tmp_path,
        base_files(),
        image_metadata={"ds/images/train/a.jpg": {"camera": "left"}},
    )
    assert images(store)["a.jpg"]["metadata"] == {"camera": "left"}
    assert images(store)["b.jpg"]["metadata"] == {}


def test_a_damaged_zip_directory_is_a_clear_error(store, tmp_path):
    path = tmp_path / "x.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.jpg", jpeg_bytes())
    path.write_bytes(buffer.getvalue()[:-30])
    db, blobs, ids = store
    with pytest.raises(Invalid):
        run_ingest(
            db, blobs, ids["detect"], "j", path, IngestOptions(), lambda p, m: None
        )


def test_case_19c_boxes_become_polygons_only_by_opt_in(store, tmp_path):
    files = base_files()
    _, _, report = ingest(store, tmp_path, files, "segment", boxes_as_polygons=True)
    label = images(store, "segment")["a.jpg"]["labels"][0]
    assert label["segments"] == [0.375, 0.375, 0.625, 0.375, 0.625, 0.625, 0.375, 0.625]
    assert "4-point polygons" in report["ds/images/train/a.jpg"]["detail"]


def test_case_02_several_yamls_the_choice_is_said(store, tmp_path):
    files = base_files()
    files["ds/extra/hyp.yaml"] = b"lr0: 0.01\n"
    summary, _, _ = ingest(store, tmp_path, files)
    assert any(
        "chose ds/data.yaml over ds/extra/hyp.yaml" in w for w in summary["warnings"]
    )


def test_coco_keypoints_make_a_pose_dataset(store, tmp_path):
    import json

    coco = {
        "images": [{"id": 1, "file_name": "p.jpg"}],
        "categories": [{"id": 1, "name": "person", "keypoints": ["l", "r"]}],
        "annotations": [
            {
                "id": 5,
                "image_id": 1,
                "category_id": 1,
                "bbox": [16, 16, 32, 32],
                "keypoints": [16, 32, 2, 48, 32, 1],
            },
        ],
    }
    files = {
        "annotations/person_keypoints_val.json": json.dumps(coco).encode(),
        "images/p.jpg": jpeg_bytes(),
    }
    summary, dataset, _ = ingest(store, tmp_path, files, "pose")
    assert dataset["metadata"]["kptShape"] == [2, 3] and summary["errors"] == 0
    (row,) = images(store, "pose").values()
    assert row["split"] == "val"
    assert row["labels"] == [
        {
            "classId": 0,
            "bbox": [0.5, 0.5, 0.5, 0.5],
            "keypoints": [0.25, 0.5, 2, 0.75, 0.5, 1],
        }
    ]


# -- findings of the fresh-user trial ----------------------------------------


def _tiff(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "TIFF")
    return buffer.getvalue()


def test_trial_2_float_tiff_is_one_files_business(store, tmp_path):
    import numpy as np

    files = base_files()
    ramp = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    files["ds/images/train/a.jpg"] = _tiff(Image.fromarray(ramp, "F"))
    summary, _, report = ingest(store, tmp_path, files)
    assert summary["added"] == 4 and summary["errors"] == 0
    verdict = report["ds/images/train/a.jpg"]
    assert (verdict["verdict"], verdict["reason"]) == ("fixed", "converted_to_rgb")
    row = images(store)["a.jpg"]
    stored = Image.open(store[1].image_path(row["hash"], row["ext"]))
    assert stored.mode == "RGB" and stored.getpixel((63, 63))[0] > 240


def test_trial_2_an_unexpected_error_in_one_file_is_its_internal_error(
    store, tmp_path, monkeypatch, caplog
):
    from appliance.ingest import job as job_module

    real = job_module.normalise

    def broken(data, name=""):
        if name == "b.jpg":
            raise TypeError("something nobody expected")
        return real(data, name)

    monkeypatch.setattr(job_module, "normalise", broken)
    with caplog.at_level("ERROR"):
        summary, dataset, report = ingest(store, tmp_path, base_files())
    assert summary["added"] == 3 and dataset["status"] == "ready"
    assert summary["skippedCounts"] == {"internal_error": 1}
    assert report["ds/images/train/b.jpg"]["reason"] == "internal_error"
    logged = [r for r in caplog.records if r.levelname == "ERROR"]
    assert logged and logged[0].exc_info and "b.jpg" in logged[0].getMessage()


def test_trial_3_windows_backslash_names_pair_images_and_labels(store, tmp_path):
    files = {k.replace("/", "\\"): v for k, v in base_files("").items()}
    summary, dataset, report = ingest(store, tmp_path, files)
    assert summary["added"] == 4 and summary["paired"] == 4
    assert summary["splits"] == {"train": 2, "val": 2}
    assert "images/train/a.jpg" in report


def test_trial_4_a_tar_name_that_is_not_utf8_is_stored_safely(store, tmp_path):
    import tarfile

    db, blobs, ids = store
    path = tmp_path / "names.tar"
    files = base_files("")
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo(
            b"images/train/caf\xe9.jpg".decode("utf-8", "surrogateescape")
        )
        data = _distinct("cafe")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    job = db.create_job("ingest", ids["detect"], None)
    summary = run_ingest(
        db, blobs, ids["detect"], job["id"], path, IngestOptions(), lambda p, m: None
    )
    assert summary["added"] == 5
    assert "caf\ufffd.jpg" in images(store)
    report = {r["path"]: r for r in db.ingest_report(ids["detect"], job["id"])}
    verdict = report["images/train/caf\ufffd.jpg"]
    assert verdict["verdict"] == "fixed" and verdict["reason"] == "renamed"


def _other(files, stems="ab"):
    """The base files with different pixels for the given stems."""
    out = dict(files)
    for stem in stems:
        out[f"ds/images/train/{stem}.jpg"] = _distinct("other" + stem)
    return out


def test_trial_7_name_conflicts_follow_the_policy(store, tmp_path):
    ingest(store, tmp_path, base_files())
    before = images(store)["a.jpg"]
    summary, _, report = ingest(store, tmp_path, _other(base_files(), "a"))
    assert report["ds/images/train/a.jpg"]["reason"] == "name_conflict"
    assert summary["skippedCounts"] == {"name_conflict": 1, "duplicate": 3}
    assert images(store)["a.jpg"]["hash"] == before["hash"]

    summary, _, report = ingest(
        store, tmp_path, _other(base_files(), "a"), conflict_policy="keep_both"
    )
    verdict = report["ds/images/train/a.jpg"]
    assert (verdict["verdict"], verdict["reason"]) == ("fixed", "renamed")
    assert "a_1.jpg" in verdict["detail"]
    assert {"a.jpg", "a_1.jpg"} <= set(images(store))
    # Identical images kept by keep_both get their own names too.
    assert report["ds/images/train/b.jpg"]["reason"] == "renamed"
    assert len(images(store)) == 8

    summary, dataset, report = ingest(
        store, tmp_path, _other(base_files(), "b"), conflict_policy="replace"
    )
    now = images(store)
    assert report["ds/images/train/b.jpg"]["reason"] == "replaced"
    # replace removes by content: the keep_both copies b_1, c_1, d_1 go with b, c, d.
    assert now["b.jpg"]["hash"] != before["hash"] and set(now) == {
        "a.jpg",
        "a_1.jpg",
        "b.jpg",
        "c.jpg",
        "d.jpg",
    }


def test_trial_7_same_name_twice_in_one_upload_keeps_both(store, tmp_path):
    files = base_files()
    files["ds/images/val/a.jpg"] = _distinct("val-a")
    summary, _, report = ingest(store, tmp_path, files)
    assert summary["added"] == 5
    assert report["ds/images/val/a.jpg"]["reason"] == "renamed"
    assert {"a.jpg", "a_1.jpg"} <= set(images(store))


def test_trial_10_a_path_twice_reads_the_first_copy_and_says_so(store, tmp_path):
    db, blobs, ids = store
    path = write_zip(tmp_path / "twice.zip", base_files())
    with zipfile.ZipFile(path, "a") as archive, pytest.warns(UserWarning):
        archive.writestr("ds/images/train/a.jpg", _distinct("second copy"))
    job = db.create_job("ingest", ids["detect"], None)
    run_ingest(
        db, blobs, ids["detect"], job["id"], path, IngestOptions(), lambda p, m: None
    )
    report = db.ingest_report(ids["detect"], job["id"])
    verdicts = [r for r in report if r["path"] == "ds/images/train/a.jpg"]
    assert sorted(r["verdict"] for r in verdicts) == ["accepted", "rejected"]
    ignored = next(r for r in verdicts if r["verdict"] == "rejected")
    assert ignored["reason"] == "duplicate_path" and "first copy" in ignored["detail"]
    first = base_files()["ds/images/train/a.jpg"]
    from appliance.blobs import content_hash

    assert images(store)["a.jpg"]["hash"] == content_hash(first)


def test_trial_18_duplicates_are_not_errors_and_fixes_carry_a_code(store, tmp_path):
    ingest(store, tmp_path, base_files())
    files = base_files()
    files["ds/labels/val/c.txt"] = b"0 0.5 0.5 0.25 0.25\n0 0.5 0.5 0.25 0.25\n"
    files["ds/images/val/c.jpg"] = _distinct("new c")
    files["ds/images/val/c2.jpg"] = files.pop("ds/images/val/c.jpg")
    files["ds/labels/val/c2.txt"] = files.pop("ds/labels/val/c.txt")
    summary, _, report = ingest(store, tmp_path, files)
    assert summary["errors"] == 0 and summary["duplicates"] == 3
    verdict = report["ds/images/val/c2.jpg"]
    assert (verdict["verdict"], verdict["reason"]) == (
        "fixed",
        "duplicate_rows_removed",
    )


def test_trial_19_pose_rows_need_a_shape_they_fit(store, tmp_path):
    files = _pose_files(b"")
    for name in files:
        if name.endswith(".txt"):
            files[name] = b"0 0.1 0.1 0.5 0.1 0.5 0.5 0.1 0.5\n"
    summary, _, report = ingest(store, tmp_path, files, "pose")
    assert summary["skippedCounts"] == {"kpt_shape_unknown": 4}
    assert "kpt_shape" in report["ds/labels/train/a.txt"]["detail"]
    assert summary["labeled"] == 0


def test_trial_19_pose_rows_switch_an_empty_detect_dataset(store, tmp_path):
    files = base_files()
    for name in files:
        if name.endswith(".txt"):
            files[name] = b"0 .5 .5 .2 .2 .4 .4 2 .6 .6 2\n"
    summary, dataset, _ = ingest(store, tmp_path, files)
    assert dataset["task"] == "pose" and summary["errors"] == 0
    assert dataset["metadata"]["kptShape"] == [2, 3]


def test_trial_19_pose_rows_in_a_non_empty_detect_dataset_are_a_mismatch(
    store, tmp_path
):
    ingest(store, tmp_path, base_files())
    files = rebase(base_files(), "ds/", "p/")
    files = {
        k: (_distinct(k) if k.endswith(".jpg") else b"0 .5 .5 .2 .2 .4 .4 2 .6 .6 2\n")
        if k.endswith((".jpg", ".txt"))
        else v
        for k, v in files.items()
    }
    summary, dataset, _ = ingest(store, tmp_path, files, conflict_policy="keep_both")
    assert dataset["task"] == "detect"
    assert summary["skippedCounts"] == {"task_mismatch": 4}


def test_trial_22_messages_say_what_the_file_is(store, tmp_path):
    files = base_files()
    files["ds/images/train/..jpg"] = _distinct("hidden")
    files["ds/data.yaml"] = b"train: images/train\nval: images/val\nnames: {}\n"
    summary, _, report = ingest(store, tmp_path, files)
    assert "hidden file" in report["ds/images/train/..jpg"]["detail"]
    detail = report["ds/labels/train/a.txt"]["detail"]
    assert "declares no classes" in detail and "0..-1" not in detail


def _coco_files(annotations, images=None) -> dict[str, bytes]:
    import json

    coco = {
        "images": images
        or [
            {"id": 1, "file_name": "a.jpg", "width": 64, "height": 64},
            {"id": 2, "file_name": "b.jpg", "width": 64, "height": 64},
        ],
        "categories": [{"id": 7, "name": "cat"}],
        "annotations": annotations,
    }
    return {
        "train/_annotations.coco.json": json.dumps(coco).encode(),
        "train/a.jpg": _distinct("coco a"),
        "train/b.jpg": _distinct("coco b"),
    }


def test_trial_9_coco_refusals_clipping_and_missing_images(store, tmp_path):
    crowd = {"segmentation": {"counts": "x", "size": [64, 64]}, "iscrowd": 1}
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [0, 0, 8, 8], **crowd},
        {"id": 2, "image_id": 2, "category_id": 7, "bbox": [32, 32, 33, 16]},
        {"id": 3, "image_id": 2, "category_id": 7, "bbox": [40, 0, 200, 8]},
        {"id": 4, "image_id": 99, "category_id": 7, "bbox": [0, 0, 8, 8]},
    ]
    summary, _, report = ingest(store, tmp_path, _coco_files(annotations))
    rows = images(store)
    # a.jpg's only annotation was refused: an error, not a background image.
    assert rows["a.jpg"]["labels"] is None and rows["a.jpg"]["error"]
    assert summary["background"] == 0 and summary["labeled"] == 1
    # b.jpg: the box 1 px past the edge is clipped; the one far past it refused alone.
    assert rows["b.jpg"]["labels"] == [{"classId": 0, "bbox": [0.75, 0.625, 0.5, 0.25]}]
    assert report["train/b.jpg"]["reason"] == "clipped"
    assert summary["skippedCounts"] == {
        "rle_annotation": 1,
        "out_of_bounds": 1,
        "missing_image": 1,
    }
    assert not any("pixel" in (r["detail"] or "") for r in report.values())


def test_trial_4_a_failed_ingest_leaves_no_orphan_blobs(store, tmp_path, monkeypatch):
    db, blobs, _ = store
    ingest(store, tmp_path, base_files())

    def stored():
        files = (
            p.relative_to(blobs.root) for p in blobs.root.rglob("*") if p.is_file()
        )
        return {p for p in files if p.parts[0] in ("images", "thumbnails")}

    kept = stored()
    assert len(kept) == 8

    def fail(*args, **kwargs):
        raise RuntimeError("the database refused the rows")

    monkeypatch.setattr(db, "replace_images", fail)
    files = rebase(base_files(), "ds/", "other/")
    files = {k: (_distinct(k) if k.endswith(".jpg") else v) for k, v in files.items()}
    files["other/images/train/a.jpg"] = base_files()["ds/images/train/a.jpg"]
    with pytest.raises(RuntimeError):
        ingest(store, tmp_path, files, conflict_policy="keep_both")
    assert stored() == kept


def test_trial_3_coco_file_names_with_backslashes_find_their_images(store, tmp_path):
    files = _coco_files(
        [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [8, 8, 16, 16]}],
        [{"id": 1, "file_name": "train\\a.jpg", "width": 64, "height": 64}],
    )
    files = {k.replace("/", "\\"): v for k, v in files.items()}
    summary, _, _ = ingest(store, tmp_path, files)
    assert summary["added"] == 1 and summary["labeled"] == 1


def test_trial_18_a_task_change_to_classify_unlabels_empty_lists(store, tmp_path):
    db, _, ids = store
    files = base_files()
    files["ds/labels/train/a.txt"] = b""  # a background image: labels []
    ingest(store, tmp_path, files)
    assert images(store)["a.jpg"]["labels"] == []
    assert db.dataset_stats(ids["detect"])["labeled"] == 4
    db.db["datasets"].update(ids["detect"], {"task": "classify"})
    assert images(store)["a.jpg"]["labels"] is None
    assert db.dataset_stats(ids["detect"])["labeled"] == 3
