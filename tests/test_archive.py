import io
import tarfile
import zipfile

import pytest
from conftest import base_files, jpeg_bytes, write_zip
from PIL import Image

from appliance.archive import Archive
from appliance.errors import Invalid
from appliance.ingest.images import ImageRejected, normalise
from appliance.ingest.labels import LabelError, parse_detect
from appliance.ingest.layout import discover, find_yaml, label_for, parse_names


def _tar(path, files, mode="w:gz"):
    with tarfile.open(path, mode) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    "suffix,mode", [(".tar", "w"), (".tar.gz", "w:gz"), (".tgz", "w:gz")]
)
def test_tar_variants_read_like_zip(tmp_path, suffix, mode):
    files = base_files()
    with (
        Archive(_tar(tmp_path / f"a{suffix}", files, mode)) as tar_archive,
        Archive(write_zip(tmp_path / "a.zip", files)) as zip_archive,
    ):
        assert tar_archive.names() == zip_archive.names() == sorted(files)
        name = "ds/labels/train/a.txt"
        assert tar_archive.read(name) == zip_archive.read(name) == files[name]


def test_traversal_absolute_and_junk_are_skipped(tmp_path):
    files = base_files()
    files["../evil.txt"] = b"x"
    files["/etc/passwd"] = b"x"
    files["__MACOSX/ds/._data.yaml"] = b"\0\5"
    files["ds/.DS_Store"] = b"junk"
    with Archive(write_zip(tmp_path / "a.zip", files)) as archive:
        names = archive.names()
        reasons = {s.reason for s in archive.skipped}
    assert not any(
        ".." in n or n.startswith("/") or "MACOSX" in n or "DS_Store" in n
        for n in names
    )
    assert reasons == {"unsafe_path"}
    assert not (tmp_path.parent / "evil.txt").exists()


def test_symlink_in_tar_is_not_followed(tmp_path):
    path = tmp_path / "a.tar"
    with tarfile.open(path, "w") as archive:
        link = tarfile.TarInfo("ds/images/train/x.jpg")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        archive.addfile(link)
    with Archive(path) as archive:
        assert archive.names() == []
        assert archive.skipped[0].reason == "link"


def test_not_an_archive(tmp_path):
    path = tmp_path / "a.zip"
    path.write_bytes(b"this is text")
    with pytest.raises(Invalid):
        Archive(path)


def test_encrypted_zip_entry_is_refused(tmp_path):
    path = write_zip(tmp_path / "a.zip", {"ds/data.yaml": b"names: [a]"})
    raw = bytearray(path.read_bytes())
    # Set the "encrypted" flag bit in both the local and the central headers.
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):
        at = raw.find(sig)
        offset = 6 if sig == b"PK\x03\x04" else 8
        raw[at + offset] |= 0x1
    path.write_bytes(bytes(raw))
    with pytest.raises(Invalid, match="encrypted"):
        Archive(path)


def test_member_count_limit(tmp_path):
    from appliance.archive import Limits

    files = {f"ds/images/train/{i}.jpg": b"x" for i in range(30)}
    with pytest.raises(Invalid, match="limit"):
        Archive(write_zip(tmp_path / "a.zip", files), Limits(max_members=10))


def test_bomb_ratio_is_skipped(tmp_path):
    from appliance.archive import Limits

    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("ds/images/train/big.jpg", b"\0" * (8 * 1024 * 1024))
    # The floor is lowered so that a small member stands for a large one.
    with Archive(path, Limits(ratio_floor=1024 * 1024)) as archive:
        assert archive.names() == []
        assert archive.skipped[0].reason == "compression_ratio"


def test_yaml_at_root_or_a_few_folders_down():
    assert find_yaml(["data.yaml", "images/a.jpg"]) == "data.yaml"
    assert find_yaml(["ds/data.yaml", "ds/images/a.jpg"]) == "ds/data.yaml"
    assert find_yaml(["ds/other.yaml", "ds/data.yaml"]) == "ds/data.yaml"
    assert find_yaml(["a/b/data.yaml"]) == "a/b/data.yaml"
    assert find_yaml(["a/b/c/d/data.yaml"]) is None
    assert find_yaml(["other.yaml", "ds/data.yaml"]) == "ds/data.yaml"


def test_discover_pairs_and_splits():
    files = base_files("")
    layout = discover(sorted(files), lambda n: files[n].decode())
    assert layout.names == ["a", "b"]
    splits = {item.image.rsplit("/", 1)[1]: item.split for item in layout.items}
    assert splits == {
        "a.jpg": "train",
        "b.jpg": "train",
        "c.jpg": "val",
        "d.jpg": "val",
    }
    assert all(item.label for item in layout.items)


def test_roboflow_layout_maps_valid_to_val():
    files = {
        "data.yaml": b"train: ../train/images\nval: ../valid/images\nnames: [a]\n",
        "train/images/a.jpg": b"",
        "train/labels/a.txt": b"",
        "valid/images/c.jpg": b"",
        "valid/labels/c.txt": b"",
    }
    layout = discover(sorted(files), lambda n: files[n].decode())
    assert {i.image: i.split for i in layout.items} == {
        "train/images/a.jpg": "train",
        "valid/images/c.jpg": "val",
    }
    assert all(i.label for i in layout.items)


def test_label_path_replaces_only_the_last_images_folder():
    assert label_for("ds/images/train/images/x.jpg") == "ds/images/train/labels/x.txt"
    assert label_for("images/val/a b.png") == "labels/val/a b.txt"


@pytest.mark.parametrize(
    "doc,names",
    [
        ({"names": ["a", "b"]}, ["a", "b"]),
        ({"names": {0: "a", 1: "b"}}, ["a", "b"]),
        ({"names": {0: "a", 2: "c"}}, ["a", "class1", "c"]),
        ({"nc": 2}, ["class0", "class1"]),
    ],
)
def test_parse_names(doc, names):
    assert parse_names(doc) == names


def test_parse_names_disagreeing_nc():
    with pytest.raises(Invalid, match="nc: 3"):
        parse_names({"nc": 3, "names": ["a", "b"]})


def test_detect_labels_fix_and_reject():
    parsed = parse_detect(
        "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n\n1 0.995 0.5 0.03 0.2\n", 2
    )
    assert len(parsed.labels) == 2
    assert parsed.labels[0] == {"classId": 0, "bbox": [0.5, 0.5, 0.2, 0.2]}
    assert any("duplicate" in f for f in parsed.fixes) and any(
        "clipped" in f for f in parsed.fixes
    )
    assert parse_detect("  \n", 2).labels == []
    polygon = parse_detect("0 0.1 0.1 0.3 0.1 0.3 0.3 0.1 0.3", 1).labels[0]
    assert polygon["bbox"] == [0.2, 0.2, 0.2, 0.2] and len(polygon["segments"]) == 8
    for text, reason in [
        ("2 0.5 0.5 0.2 0.2", "class_out_of_range"),
        ("0 32 32 16 16", "pixel_coordinates"),
        ("0 0.5 0.5", "malformed_row"),
        ("x 0.5 0.5 0.2 0.2", "malformed_row"),
        ("0 0.5 0.5 0 0.2", "degenerate_box"),
        ("0 1.2 0.5 0.2 0.2", "out_of_bounds"),
    ]:
        with pytest.raises(LabelError) as err:
            parse_detect(text, 2)
        assert err.value.reason == reason


def test_images_normalised_to_rgb():
    plain = normalise(jpeg_bytes())
    assert (plain.ext, plain.width, plain.height, plain.fixes) == ("jpg", 64, 64, [])
    for mode in ("L", "RGBA", "P", "LA"):
        buffer = io.BytesIO()
        Image.new(mode, (40, 30)).save(buffer, "PNG")
        out = normalise(buffer.getvalue())
        assert Image.open(io.BytesIO(out.data)).mode == "RGB"
        assert out.fixes and out.width == 40


def test_exif_orientation_applied():
    exif = Image.Exif()
    exif[0x0112] = 6
    out = normalise(jpeg_bytes(size=(80, 40), exif=exif))
    assert (out.width, out.height) == (40, 80)
    assert "exif_orientation_applied" in out.fixes


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "not_an_image"),
        (b"hello", "not_an_image"),
        (jpeg_bytes(size=(4, 4)), "too_small"),
    ],
)
def test_images_rejected(data, reason):
    with pytest.raises(ImageRejected) as err:
        normalise(data)
    assert err.value.reason == reason


def test_png_renamed_jpg_is_read_as_png():
    out = normalise(jpeg_bytes(fmt="PNG"))
    assert out.ext == "png"


def test_unknown_files_stay_rejected_after_ultralytics_patches_pillow():
    """Importing ultralytics swaps Image.open for one that tries to install a HEIF
    plugin on the first unidentified file; ingest must still say not_an_image."""
    import ultralytics.utils.patches  # noqa: F401  (applies the patch)

    with pytest.raises(ImageRejected) as err:
        normalise(b"definitely not an image")
    assert err.value.reason == "not_an_image"


def test_symlink_in_zip_is_not_followed(tmp_path):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo("ds/images/train/x.jpg")
        info.external_attr = 0o120777 << 16
        archive.writestr(info, "/etc/passwd")
        archive.writestr("ds/images/train/y.jpg", b"y")
    with Archive(path) as archive:
        assert archive.names() == ["ds/images/train/y.jpg"]
        assert [s.reason for s in archive.skipped] == ["link"]


def _bmp(color) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (3000, 2000), color).save(buffer, "BMP")
    return buffer.getvalue()


@pytest.mark.parametrize("suffix", ["zip", "tgz"])
def test_trial_11_flat_uncompressed_images_are_not_bombs(tmp_path, suffix):
    files = {f"ds/images/train/{i}.bmp": _bmp((i * 40, 0, 0)) for i in range(3)}
    path = tmp_path / f"bmp.{suffix}"
    if suffix == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in files.items():
                archive.writestr(name, data)
    else:
        _tar(path, files)
    assert path.stat().st_size * 100 < 3 * len(files["ds/images/train/0.bmp"])
    with Archive(path) as archive:
        assert archive.names() == sorted(files) and archive.skipped == []
        assert archive.read("ds/images/train/2.bmp") == files["ds/images/train/2.bmp"]


def test_trial_11_bombs_are_still_refused_above_the_floor(tmp_path):
    from appliance.archive import MAX_RATIO, RATIO_FLOOR_BYTES, Limits

    assert (RATIO_FLOOR_BYTES, MAX_RATIO) == (200 * 1024**2, 100)
    limits = Limits(ratio_floor=4 * 1024 * 1024)
    path = tmp_path / "mixed.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("ds/images/train/small.bmp", b"\0" * (3 * 1024 * 1024))
        archive.writestr("ds/images/train/big.bmp", b"\0" * (6 * 1024 * 1024))
    with Archive(path, limits) as archive:
        assert archive.names() == ["ds/images/train/small.bmp"]
        assert [s.reason for s in archive.skipped] == ["compression_ratio"]
    tgz = _tar(tmp_path / "bomb.tgz", {"a.bmp": b"\0" * (6 * 1024 * 1024)})
    with pytest.raises(Invalid, match="compression_ratio"):
        Archive(tgz, limits)
    with pytest.raises(Invalid, match="limit"):
        Archive(tgz, Limits(max_total_bytes=1024 * 1024))


def test_trial_3_backslash_zip_names_are_folders_read_by_their_own_name(tmp_path):
    path = tmp_path / "win.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ds\\images\\train\\a.jpg", b"image")
    with Archive(path) as archive:
        assert archive.names() == ["ds/images/train/a.jpg"]
        assert archive.read("ds/images/train/a.jpg") == b"image"


def test_trial_10_duplicate_path_first_copy_is_the_one_read(tmp_path):
    path = tmp_path / "twice.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.jpg", b"first")
        with pytest.warns(UserWarning):
            archive.writestr("a.jpg", b"second")
    with Archive(path) as archive:
        assert archive.read("a.jpg") == b"first"
        assert archive.skipped[0].reason == "duplicate_path"
    tar = tmp_path / "twice.tar"
    with tarfile.open(tar, "w") as archive:
        for data in (b"first", b"second"):
            info = tarfile.TarInfo("a.jpg")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    with Archive(tar) as archive:
        assert archive.read("a.jpg") == b"first"


def test_trial_4_tar_names_not_utf8_are_shown_with_replacement(tmp_path):
    path = tmp_path / "latin1.tar"
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as archive:
        info = tarfile.TarInfo(b"caf\xe9.jpg".decode("utf-8", "surrogateescape"))
        info.size = 5
        archive.addfile(info, io.BytesIO(b"image"))
    with Archive(path) as archive:
        assert archive.names() == ["caf\ufffd.jpg"]
        assert archive.read("caf\ufffd.jpg") == b"image"
        assert "caf\ufffd.jpg" in archive.renamed


@pytest.mark.parametrize(
    "mode",
    [
        "1",
        "I",
        "I;16",
        "I;16B",
        "F",
        "LA",
        "PA",
        "La",
        "RGBa",
        "CMYK",
        "YCbCr",
        "LAB",
        "HSV",
    ],
)
def test_trial_2_every_pillow_mode_becomes_8bit_rgb(mode):
    from appliance.ingest.images import _to_rgb

    image = Image.new(mode, (16, 16))
    assert _to_rgb(image).mode == "RGB"


def test_trial_2_float_and_32bit_images_keep_their_range():
    import numpy as np

    from appliance.ingest.images import _to_rgb

    ramp = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    out = np.asarray(_to_rgb(Image.fromarray(ramp, "F")))
    assert out.min() == 0 and out.max() == 255
    deep = (np.arange(256, dtype=np.int32) * 256).reshape(16, 16)
    out = np.asarray(_to_rgb(Image.fromarray(deep, "I")))
    assert out.max() == 254 and out[0, 1, 0] == 1


def test_trial_4_a_zip_whose_utf8_names_are_not_is_a_clear_error(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("caf\u00e9.jpg", b"x")  # flagged UTF-8
    path = tmp_path / "bad.zip"
    path.write_bytes(buffer.getvalue().replace("caf\u00e9".encode(), b"caf\xff\xfe"))
    with pytest.raises(Invalid, match="UTF-8"):
        Archive(path)


@pytest.mark.parametrize(
    "rows, shape",
    [
        (["0 .5 .5 .2 .2 .4 .4 2 .6 .6 1"], [2, 3]),  # flags at every third value
        (["0 .5 .5 .2 .2 .4 .4 .3 .6 .6 .5"], [3, 2]),  # no flags: pairs
        (["0 .5 .5 .2 .2 .4 .4 .5 .6 .6"], None),  # 9 values: pose [2, 2] or obb
        (["0 .5 .5 .2 .2 .4 .4 2", "0 .5 .5 .2 .2 .4 .4 2 .6 .6 2"], None),  # lengths
        (["0 .5 .5 .2 .2 .4 .4 .7"], None),  # 3 values, the third no flag
    ],
)
def test_trial_19_keypoint_shape_needs_consistent_rows_that_fit(rows, shape):
    from appliance.ingest.labels import guess_kpt_shape

    guessed, problem = guess_kpt_shape([row.split() for row in rows])
    assert guessed == shape
    assert (problem is None) == (shape is not None)
    if problem:
        assert "kpt_shape" in problem
