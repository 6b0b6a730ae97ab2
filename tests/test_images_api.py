"""Image operations through the real app: pages by offset and cursor, selected
images, signed URLs, one image's labels (all five tasks), metadata and split,
and bulk moves and deletes with their conflict policies."""

from __future__ import annotations

import pytest
from conftest import add_images, make_app
from starlette.testclient import TestClient

from appliance.keys import create_key


def box(cls: int = 0) -> dict:
    return {"classId": cls, "bbox": [0.5, 0.5, 0.2, 0.2]}


@pytest.fixture
def env(home):
    app, key = make_app(home, run_queue=False)
    db = app.state.services.db
    bob = db.create_user("bob")
    alice_id = db.user_by_name("alice")["id"]

    def dataset(slug: str, specs: list[dict], task="detect", classes=("a", "b")):
        row = db.create_dataset(
            owner_id=alice_id,
            slug=slug,
            name=slug,
            task=task,
            visibility="private",
            class_names=list(classes),
        )
        images = add_images(db, row["id"], specs, blobs=app.state.services.blobs)
        return row, {image["name"]: image["id"] for image in images}

    with TestClient(app) as client:
        yield {
            "client": client,
            "db": db,
            "dataset": dataset,
            "alice": {"Authorization": f"Bearer {key}"},
            "bob": {"Authorization": f"Bearer {create_key(db, bob['id'])}"},
        }


def test_pages_by_cursor_and_filters(env):
    client, alice = env["client"], env["alice"]
    _, ids = env["dataset"](
        "d",
        [
            {"name": "a.jpg", "labels": [box(0)]},
            {"name": "b.jpg", "labels": [box(1)]},
            {"name": "c.jpg", "labels": [box(0), box(1)], "split": "val"},
            {"name": "d.jpg"},
            {"name": "e.jpg", "labels": []},
        ],
    )
    env["dataset"]("other", [{"name": "z.jpg"}])
    url = "/api/datasets/alice/d/images"
    for sort in ("name-asc", "newest", "labels-desc"):
        seen, cursor = [], None
        for _ in range(5):
            query = f"{url}?limit=2&sort={sort}" + (
                f"&cursor={cursor}" if cursor else ""
            )
            page = client.get(query, headers=alice).json()
            seen += [i["name"] for i in page["images"]]
            cursor = page.get("nextCursor")
            assert page["total"] == 5 and page["hasMore"] == bool(cursor)
            if not cursor:
                break
        assert sorted(seen) == ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"], sort
    assert seen[:1] == ["c.jpg"]  # labels-desc: the image with two labels first
    first = client.get(f"{url}?sort=name-asc&limit=2&includeTotal=false", headers=alice)
    assert "total" not in first.json() and first.json()["nextCursor"] == ids["b.jpg"]

    def names(q):
        return [
            i["name"]
            for i in client.get(f"{url}?sort=name-asc&{q}", headers=alice).json()[
                "images"
            ]
        ]

    assert names("classIds=1") == ["b.jpg", "c.jpg"]
    assert names("classIds=") == []
    assert names("hasLabel=false") == ["d.jpg"]
    assert names("split=val&classIds=0") == ["c.jpg"]
    assert names("search=c.j") == ["c.jpg"]
    other_image = env["db"].query("SELECT id FROM images WHERE name = 'z.jpg'")[0]["id"]
    for bad in (
        "cursor=zz",
        f"cursor={other_image}",
        "classIds=a",
        "limit=5001",
        "sort=best",
    ):
        assert client.get(f"{url}?{bad}", headers=alice).status_code == 400, bad


def test_selected_images_with_capped_labels(env):
    client, alice = env["client"], env["alice"]
    _, ids = env["dataset"](
        "d",
        [
            {"name": "a.jpg", "labels": [box()] * 150},
            {"name": "b.jpg"},
            {"name": "c.jpg"},
        ],
    )
    _, elsewhere = env["dataset"]("other", [{"name": "z.jpg"}])
    body = {"imageIds": [ids["a.jpg"].upper(), ids["c.jpg"], elsewhere["z.jpg"]]}
    got = client.post(
        "/api/datasets/alice/d/images?includeLabels=true&sort=name-asc",
        headers=alice,
        json=body,
    ).json()
    assert [i["name"] for i in got["images"]] == ["a.jpg", "c.jpg"]
    assert got["total"] == 2 and got["hasMore"] is False
    assert (
        len(got["images"][0]["labels"]) == 100 and got["images"][0]["labelsTruncated"]
    )
    for bad in (
        {"imageIds": []},
        {"imageIds": ["x"]},
        {"imageIds": ["0" * 24] * 1001},
        {},
    ):
        reply = client.post("/api/datasets/alice/d/images", headers=alice, json=bad)
        assert reply.status_code == 400


def test_signed_urls_by_id_and_by_hash(env):
    client, alice = env["client"], env["alice"]
    row, ids = env["dataset"]("d", [{"name": "a.jpg"}, {"name": "b.jpg"}])
    _, elsewhere = env["dataset"]("other", [{"name": "z.jpg"}])
    got = client.post(
        "/api/images/urls", headers=alice, json={"imageIds": list(ids.values())}
    )
    assert set(got.json()["urls"]) == set(ids.values()) and got.json()["depths"] == {}
    image = client.get(got.json()["urls"][ids["a.jpg"]])
    assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"
    mixed = {"imageIds": [ids["a.jpg"], elsewhere["z.jpg"]]}
    assert client.post("/api/images/urls", headers=alice, json=mixed).status_code == 400
    unknown = {"imageIds": ["f" * 24]}
    assert (
        client.post("/api/images/urls", headers=alice, json=unknown).status_code == 404
    )
    hidden = {"imageIds": [ids["a.jpg"]]}
    assert (
        client.post("/api/images/urls", headers=env["bob"], json=hidden).status_code
        == 404
    )
    digest = env["db"].image(ids["b.jpg"])["hash"]
    by_hash = client.post(
        f"/api/datasets/{row['id']}/images/urls",
        headers=alice,
        json={"hashes": [digest, "0" * 32]},
    ).json()
    assert list(by_hash["urls"]) == [digest]
    assert client.get(by_hash["thumbnails"][digest]).status_code == 200


TASK_CASES = {
    "detect": ([box(1)], [{"classId": 0, "bbox": [0.5, 0.5, 2, 0.2]}]),
    "segment": (
        [{"classId": 0, "segments": [0.1, 0.1, 0.5, 0.1, 0.3, 0.4]}],
        [{"classId": 0, "segments": [0.1, 0.1, 0.5]}],
    ),
    "pose": (
        # Three [x, y, v] keypoints set the dataset's shape; two then do not fit.
        [
            {
                "classId": 0,
                "bbox": [0.5, 0.5, 0.4, 0.4],
                "keypoints": [0.4, 0.4, 2, 0.6, 0.6, 1, 0.5, 0.5, 0],
            }
        ],
        [
            {
                "classId": 0,
                "bbox": [0.5, 0.5, 0.4, 0.4],
                "keypoints": [0.4, 0.4, 2, 0.6, 0.6, 1],
            }
        ],
    ),
    "obb": (
        [{"classId": 1, "obb": [0.1, 0.1, 0.5, 0.1, 0.5, 0.4, 0.1, 0.4]}],
        [{"classId": 1, "bbox": [0.5, 0.5, 0.2, 0.2]}],
    ),
    "classify": ([{"classId": 1}], [{"classId": 0}, {"classId": 1}]),
}


@pytest.mark.parametrize("task", sorted(TASK_CASES))
def test_image_labels_for_every_task(env, task):
    client, alice, db = env["client"], env["alice"], env["db"]
    row, ids = env["dataset"](task, [{"name": "a.jpg"}], task=task)
    good, bad = TASK_CASES[task]
    url = f"/api/images/{ids['a.jpg']}"
    saved = client.patch(url, headers=alice, json={"labels": good})
    assert saved.status_code == 200, saved.text
    assert saved.json()["labelCount"] == len(good)
    refused = client.patch(url, headers=alice, json={"labels": bad})
    assert refused.status_code == 400, refused.text
    for other in ([{"classId": 5}], [{"classId": 0, "extra": 1}], "x"):
        assert (
            client.patch(url, headers=alice, json={"labels": other}).status_code == 400
        )
    image = client.get(url, headers=alice).json()
    assert image["labels"] == saved.json()["labels"]
    assert image["properties"]["annotationCount"] == len(good)
    if task == "pose":
        assert db.dataset(row["id"])["metadata"]["kptShape"] == [3, 3]
    digest = image["properties"]["hash"]
    by_hash = client.put(
        f"/api/datasets/{row['id']}/images/{digest}/labels",
        headers=alice,
        json={"labels": good},
    )
    assert (
        by_hash.status_code == 200
        and by_hash.json()["labels"] == saved.json()["labels"]
    )


def test_image_metadata_split_and_delete(env):
    client, alice, db = env["client"], env["alice"], env["db"]
    _, ids = env["dataset"]("d", [{"name": "a.jpg"}, {"name": "b.jpg", "split": "val"}])
    url = f"/api/images/{ids['a.jpg']}"
    meta = client.patch(
        url, headers=alice, json={"metadata": {"location": "strasbourg"}}
    )
    assert (
        meta.json()["metadata"] == {"location": "strasbourg"}
        and meta.json()["updatedAt"]
    )
    assert client.get(url, headers=alice).json()["metadata"] == {
        "location": "strasbourg"
    }
    found = client.get("/api/datasets/alice/d/images?search=strasbourg", headers=alice)
    assert [i["name"] for i in found.json()["images"]] == ["a.jpg"]
    moved = client.patch(url, headers=alice, json={"split": "test"})
    assert moved.status_code == 200 and db.image(ids["a.jpg"])["split"] == "test"
    for body in ({}, {"name": "x"}, {"metadata": []}, {"split": "dev"}):
        assert client.patch(url, headers=alice, json=body).status_code == 400
    assert (
        client.patch(url, headers=env["bob"], json={"metadata": {}}).status_code == 404
    )
    assert client.get("/api/images/not-an-id", headers=alice).status_code == 400
    assert client.get(f"/api/images/{'0' * 24}", headers=alice).status_code == 404
    gone = client.delete(url, headers=alice).json()
    assert gone == {"success": True, "deletedImageId": ids["a.jpg"], "deletedCount": 1}
    assert client.get(url, headers=alice).status_code == 404
    assert db.image(ids["b.jpg"]) is not None
    again = client.delete(url, headers=alice)
    assert again.status_code == 409 and again.json()["error"] == "Image already deleted"
    assert client.delete(url, headers=env["bob"]).status_code == 404


def test_a_cursor_on_a_deleted_image_still_pages(env):
    """A page may end on an image that is deleted before the next page is asked
    for (a browser deleting the row it shows): paging goes on after it."""
    client, alice = env["client"], env["alice"]
    env["dataset"]("p", [{"name": f"{n}.jpg"} for n in "abcdef"])
    url = "/api/datasets/alice/p/images?limit=2&sort=name-asc"
    first = client.get(url, headers=alice).json()
    assert [i["name"] for i in first["images"]] == ["a.jpg", "b.jpg"]
    client.delete(f"/api/images/{first['nextCursor']}", headers=alice)
    second = client.get(f"{url}&cursor={first['nextCursor']}", headers=alice)
    assert second.status_code == 200, second.text
    assert [i["name"] for i in second.json()["images"]] == ["c.jpg", "d.jpg"]


def _clashing(env, slug: str) -> tuple[dict, dict]:
    """train: a.jpg, b.jpg; val: a.jpg (same name as train's) and x.jpg (same
    content as train's b.jpg)."""
    return env["dataset"](
        slug,
        [
            {"name": "a.jpg", "hash": "1" * 32},
            {"name": "b.jpg", "hash": "2" * 32},
            {"name": "a.jpg", "hash": "3" * 32, "split": "val"},
            {"name": "x.jpg", "hash": "2" * 32, "split": "val"},
        ],
    )


def _splits(db, dataset_id: str) -> list[tuple]:
    rows = db.query(
        "SELECT name, hash, split FROM images WHERE dataset_id = ? ORDER BY split, name, hash",
        [dataset_id],
    )
    return [(r["name"], r["hash"][0], r["split"]) for r in rows]


@pytest.mark.parametrize(
    "policy,moved,skipped,after",
    [
        (None, None, None, None),
        ("skip", 0, 2, None),
        (
            "keep_both",
            2,
            0,
            [
                ("a.jpg", "3", "val"),
                ("a_1.jpg", "1", "val"),
                ("b.jpg", "2", "val"),
                ("x.jpg", "2", "val"),
            ],
        ),
        ("replace", 2, 0, [("a.jpg", "1", "val"), ("b.jpg", "2", "val")]),
    ],
)
def test_bulk_move_conflict_policies(env, policy, moved, skipped, after):
    client, alice, db = env["client"], env["alice"], env["db"]
    row, _ = _clashing(env, "d")
    before = _splits(db, row["id"])
    train = [r["id"] for r in db.query("SELECT id FROM images WHERE split = 'train'")]
    body = {"imageIds": train, "split": "val"}
    if policy:
        body["conflictPolicy"] = policy
    reply = client.patch("/api/images/bulk", headers=alice, json=body)
    if policy is None:
        assert reply.status_code == 409 and "conflictPolicy" in reply.json()["error"]
    else:
        assert reply.json() == {
            "success": True,
            "modifiedCount": moved,
            "skippedCount": skipped,
            "targetSplit": "val",
        }
    assert _splits(db, row["id"]) == (after or before)


def test_bulk_refuses_bad_batches_whole(env):
    client, alice, db = env["client"], env["alice"], env["db"]
    row, ids = env["dataset"]("d", [{"name": f"{n}.jpg"} for n in range(4)])
    _, elsewhere = env["dataset"]("other", [{"name": "z.jpg"}])
    mine = list(ids.values())
    for body, status in (
        ({"imageIds": [mine[0], elsewhere["z.jpg"]], "split": "val"}, 404),
        ({"imageIds": [mine[0], "f" * 24], "split": "val"}, 404),
        ({"imageIds": ["f" * 24] * 1001, "split": "val"}, 400),
        ({"imageIds": [], "split": "val"}, 400),
        ({"imageIds": mine, "split": "dev"}, 400),
        ({"imageIds": mine, "split": "val", "conflictPolicy": "merge"}, 400),
    ):
        assert (
            client.patch("/api/images/bulk", headers=alice, json=body).status_code
            == status
        )
        # A delete takes imageIds alone: a move's body sent to it deletes nothing.
        delete = {"imageIds": body["imageIds"]} if status == 404 else body
        assert (
            client.request(
                "DELETE", "/api/images/bulk", headers=alice, json=delete
            ).status_code
            == status
        )
    seed = f"/api/datasets/{row['id']}/images/bulk"
    foreign = {"imageIds": [elsewhere["z.jpg"]], "split": "val"}
    assert client.patch(seed, headers=alice, json=foreign).status_code == 404
    foreign_delete = {"imageIds": foreign["imageIds"]}
    assert (
        client.request("DELETE", seed, headers=alice, json=foreign_delete).status_code
        == 404
    )
    assert (
        client.request(
            "DELETE", "/api/images/bulk", headers=env["bob"], json={"imageIds": mine}
        ).status_code
        == 404
    )
    assert db.scalar("SELECT count(*) FROM images WHERE split = 'train'") == 5
    deleted = client.request(
        "DELETE", seed, headers=alice, json={"imageIds": [mine[0], mine[0], mine[1]]}
    ).json()
    assert deleted == {"success": True, "deletedCount": 2, "deletedImageIds": mine[:2]}
    moved = client.patch(
        seed, headers=alice, json={"imageIds": mine[2:], "split": "test"}
    )
    assert moved.json()["modifiedCount"] == 2
    assert [(n, s) for n, _, s in _splits(db, row["id"])] == [
        ("2.jpg", "test"),
        ("3.jpg", "test"),
    ]


HOSTILE = [None, True, -1, 10**30, 1.5, "x", "", [], {}, [None], [{"a": 1}], ["0" * 24]]
FIELDS = {
    "PATCH {ds}": [
        "name",
        "description",
        "metadata",
        "visibility",
        "tags",
        "classNames",
        "classColors",
        "task",
        "license",
        "format",
        "iconLetter",
    ],
    "POST {ds}/clone": [
        "name",
        "dataset",
        "owner",
        "visibility",
        "license",
        "description",
    ],
    "POST {ds}/classes/merge": ["sourceClassIds", "targetClassId"],
    "POST {ds}/classes/delete": ["classIds"],
    "POST {ds}/splits/redistribute": ["train", "val", "test", "seed"],
    "POST {ds}/images": ["imageIds"],
    "PATCH /api/images/{image}": ["labels", "metadata", "split", "conflictPolicy"],
    "PATCH /api/images/bulk": ["imageIds", "split", "conflictPolicy"],
    "DELETE /api/images/bulk": ["imageIds"],
    "POST /api/images/urls": ["imageIds"],
    "POST /api/trash": ["id", "type"],
    "DELETE /api/trash": ["id", "type", "all"],
}


def test_hostile_bodies_never_fail_the_server_or_lose_data(env):
    """Every field of every write, given every wrong kind of value alone and
    beside valid fields: a 4xx, never a 500, and nothing lost."""
    client, alice, db = env["client"], env["alice"], env["db"]
    row, ids = env["dataset"](
        "d", [{"name": "a.jpg", "labels": [box(0), box(1)]}, {"name": "b.jpg"}]
    )
    image = ids["a.jpg"]
    valid = {
        "targetClassId": 1,
        "train": 100,
        "val": 0,
        "test": 0,
        "split": "val",
        "imageIds": [image],
        "type": "dataset",
        "id": row["id"],
    }
    before = db.query("SELECT * FROM images ORDER BY id")
    for route, names in FIELDS.items():
        method, path = route.split(" ")
        path = path.format(ds=f"/api/datasets/{row['id']}", image=image)
        for name in names:
            for value in HOSTILE:
                for body in ({name: value}, {**valid, name: value}):
                    if route.startswith("DELETE") and body.get(name) in (
                        ["0" * 24],
                        [image],
                    ):
                        continue  # a well-formed delete of a real image is allowed
                    reply = client.request(method, path, headers=alice, json=body)
                    assert reply.status_code < 500, (route, body, reply.text)
                    if reply.status_code >= 400:
                        assert set(reply.json()) == {"error"}
        assert db.query("SELECT count(*) AS n FROM images")[0]["n"] >= 1, route
    after = {r["id"]: r for r in db.query("SELECT * FROM images ORDER BY id")}
    assert set(after) == {r["id"] for r in before}  # nothing deleted


def test_pose_labels_keep_one_keypoint_shape(env):
    client, alice, db = env["client"], env["alice"], env["db"]
    row, ids = env["dataset"]("p", [{"name": "a.jpg"}], task="pose")
    url = f"/api/images/{ids['a.jpg']}"
    bbox = [0.5, 0.5, 0.4, 0.4]
    triples = {"classId": 0, "bbox": bbox, "keypoints": [0.1, 0.1, 2] * 3}
    pairs = {"classId": 0, "bbox": bbox, "keypoints": [0.1, 0.1] * 5}
    mixed = client.patch(url, headers=alice, json={"labels": [triples, pairs]})
    assert mixed.status_code == 400
    assert "kptShape" not in db.dataset(row["id"])["metadata"]
    assert client.patch(url, headers=alice, json={"labels": [pairs]}).status_code == 200
    assert db.dataset(row["id"])["metadata"]["kptShape"] == [5, 2]
    assert (
        client.patch(url, headers=alice, json={"labels": [triples]}).status_code == 400
    )
