"""Dataset operations through the real app (real SQLite file, real routes):
lists, details, updates, the trash, clones, class statistics, class merge and
delete, split redistribution and trained models, in both route families."""

from __future__ import annotations

import pytest
from conftest import add_images, make_app
from starlette.testclient import TestClient

from appliance import class_stats
from appliance.keys import create_key

BOX = {"classId": 0, "bbox": [0.5, 0.5, 0.2, 0.2]}


def box(cls: int, cx: float = 0.5, cy: float = 0.5) -> dict:
    return {"classId": cls, "bbox": [cx, cy, 0.2, 0.1]}


@pytest.fixture
def world(home):
    """alice (with a team `lab` she owns), bob (a stranger), and alice's
    dataset `cars` with three classes and four images."""
    app, key = make_app(home, run_queue=False)
    db = app.state.services.db
    alice = db.user_by_name("alice")
    bob = db.create_user("bob")
    db.create_team("lab", "Lab", alice["id"])
    cars = db.create_dataset(
        owner_id=alice["id"],
        slug="cars",
        name="Cars",
        task="detect",
        visibility="private",
        class_names=["car", "bus", "van"],
    )
    add_images(
        db,
        cars["id"],
        [
            {"name": "a.jpg", "labels": [box(0), box(1), box(2)]},
            {"name": "b.jpg", "labels": [box(1), box(1, 0.1, 0.9)]},
            {"name": "c.jpg", "labels": [box(2)], "split": "val"},
            {"name": "d.jpg", "labels": None, "split": "val"},
        ],
        blobs=app.state.services.blobs,
    )
    with TestClient(app) as client:
        yield {
            "client": client,
            "db": db,
            "alice": {"Authorization": f"Bearer {key}"},
            "bob": {"Authorization": f"Bearer {create_key(db, bob['id'])}"},
            "cars": db.dataset(cars["id"]),
        }


def parts(world: dict, last: str = "cars") -> tuple:
    return world["client"], world["db"], world["alice"], world[last]


def labels_of(db, dataset_id: str) -> dict[str, list]:
    return {
        r["name"]: r["labels"]
        for r in db.query(
            "SELECT name, labels FROM images WHERE dataset_id = ?", [dataset_id]
        )
    }


def test_lists_show_what_the_caller_may_see(world):
    client, db, alice, bob = world["client"], world["db"], world["alice"], world["bob"]
    owner = db.user_by_name("alice")["id"]
    for n in range(21):
        db.create_dataset(
            owner_id=owner,
            slug=f"pub-{n}",
            name=f"P{n}",
            task="detect",
            visibility="public",
        )
    mine = client.get("/api/datasets", headers=alice).json()
    assert mine["total"] == 22 and len(mine["datasets"]) == 20  # seed default limit
    theirs = client.get("/api/datasets?username=alice&limit=500", headers=bob).json()
    assert theirs["total"] == 21 and "cars" not in {
        d["dataset"] for d in theirs["datasets"]
    }
    one = client.get("/api/datasets?owner=alice&slug=cars", headers=alice).json()
    assert [d["dataset"] for d in one["datasets"]] == ["cars"]
    assert (one["datasets"][0]["slug"], one["datasets"][0]["username"]) == (
        "cars",
        "alice",
    )
    assert (
        client.get("/api/datasets?owner=alice&slug=cars", headers=bob).json()["total"]
        == 0
    )
    assert client.get("/api/datasets?limit=501", headers=alice).status_code == 400
    assert client.get("/api/datasets").status_code == 401
    listed = client.get("/api/datasets/alice?limit=1000", headers=alice).json()
    cars = next(d for d in listed["datasets"] if d["dataset"] == "cars")
    assert cars["imageCount"] == 4 and cars["annotationCount"] == 6
    sample = cars["sampleImages"][0]
    assert "imageUrl" not in sample and client.get(sample["url"]).status_code == 200
    plain = client.get("/api/datasets/alice?includeSamples=false", headers=alice).json()
    assert all("sampleImages" not in d for d in plain["datasets"])


def test_detail_shows_pose_shape_and_lineage(world):
    client, db, alice = world["client"], world["db"], world["alice"]
    owner = db.user_by_name("alice")["id"]
    pose = db.create_dataset(
        owner_id=owner,
        slug="people",
        name="People",
        task="pose",
        visibility="private",
        class_names=["person"],
        metadata={"kptShape": [17, 3], "flipIdx": list(range(17)), "site": "x"},
    )
    by_id = client.get(f"/api/datasets/{pose['id']}", headers=alice).json()["dataset"]
    assert by_id["kptShape"] == [17, 3] and by_id["flipIdx"] == list(range(17))
    assert by_id["cloneCount"] == 0 and by_id["sampleImages"] == []


def test_update_renames_and_guards_classes(world):
    client, db, alice, cars = parts(world)
    reply = client.patch(
        "/api/datasets/alice/cars",
        headers=alice,
        json={
            "name": "Fast Cars",
            "description": "d",
            "visibility": "public",
            "tags": ["x"],
        },
    )
    assert reply.json() == {"success": True, "dataset": "fast-cars"}
    assert client.get("/api/datasets/alice/cars", headers=alice).status_code == 404
    got = client.get("/api/datasets/alice/fast-cars", headers=alice).json()["dataset"]
    assert (got["name"], got["visibility"], got["tags"]) == (
        "Fast Cars",
        "public",
        ["x"],
    )
    renamed = client.patch(
        f"/api/datasets/{cars['id']}",
        headers=alice,
        json={"classNames": ["auto", "bus", "van", "new"]},
    )
    assert renamed.status_code == 200
    assert db.dataset(cars["id"])["class_names"] == ["auto", "bus", "van", "new"]
    for body, status in (
        ({"classNames": ["auto", "bus"]}, 409),  # class 2 still labels images
        ({"classNames": ["a", "a", "b"]}, 400),
        ({"colour": "red"}, 400),
        ({"visibility": "secret"}, 400),
        ({"task": "segment"}, 409),  # labelled images
        ({"starred": True}, 400),
    ):
        assert (
            client.patch(
                f"/api/datasets/{cars['id']}", headers=alice, json=body
            ).status_code
            == status
        )
    assert db.dataset(cars["id"])["class_names"] == ["auto", "bus", "van", "new"]
    meta = client.patch(
        f"/api/datasets/{cars['id']}", headers=alice, json={"metadata": {"k": 1}}
    )
    assert meta.status_code == 200 and db.dataset(cars["id"])["metadata"] == {"k": 1}
    bob = client.patch(
        f"/api/datasets/{cars['id']}", headers=world["bob"], json={"name": "Mine"}
    )
    assert bob.status_code == 403  # public now: bob sees it but may not edit


def test_trash_hides_restores_and_deletes_for_good(world):
    client, db, alice, cars = parts(world)
    image = db.query("SELECT id FROM images WHERE dataset_id = ?", [cars["id"]])[0][
        "id"
    ]
    assert client.delete("/api/datasets/alice/cars", headers=alice).json() == {
        "success": True
    }
    assert client.get("/api/datasets/alice/cars", headers=alice).status_code == 404
    assert client.get(f"/api/datasets/{cars['id']}", headers=alice).status_code == 404
    assert client.get(f"/api/images/{image}", headers=alice).status_code == 404
    assert client.get("/api/datasets/alice", headers=alice).json()["total"] == 0
    db.update_dataset(cars["id"], visibility="public")
    assert client.get("/api/explore/search?q=cars").json()["datasets"] == []
    again = client.post(
        "/api/datasets", headers=alice, json={"dataset": "cars", "name": "C"}
    )
    assert again.status_code == 400 and "trash" in again.json()["error"]
    trash = client.get("/api/trash", headers=alice).json()
    assert [i["_id"] for i in trash["items"]] == [cars["id"]]
    assert (
        trash["items"][0]["daysRemaining"] == 30 and trash["items"][0]["sizeBytes"] > 0
    )
    assert client.get("/api/trash?type=model", headers=alice).json()["items"] == []
    assert client.get("/api/trash", headers=world["bob"]).json()["total"] == 0
    body = {"id": cars["id"], "type": "dataset"}
    assert client.post("/api/trash", headers=world["bob"], json=body).status_code == 404
    assert client.post("/api/trash", headers=alice, json=body).json() == {
        "success": True
    }
    restored = client.get("/api/datasets/alice/cars", headers=alice).json()
    assert restored["dataset"]["imageCount"] == 4
    explored = client.get("/api/explore/search?q=cars").json()["datasets"]
    assert [d["dataset"] for d in explored] == ["cars"]
    client.delete(f"/api/datasets/{cars['id']}", headers=alice)
    gone = client.request("DELETE", "/api/trash", headers=alice, json=body)
    assert gone.json() == {"success": True, "deletedCount": 1}
    assert db.dataset(cars["id"]) is None
    assert client.post("/api/trash", headers=alice, json=body).status_code == 404
    assert (
        client.request(
            "DELETE", "/api/trash", headers=alice, json={"all": False}
        ).status_code
        == 400
    )


def test_clone_copies_into_another_workspace(world):
    client, db, alice, cars = parts(world)
    same = client.post("/api/datasets/alice/cars/clone", headers=alice, json={})
    assert same.status_code == 400
    assert (
        client.post("/api/datasets/alice/cars/clone", headers=world["bob"]).status_code
        == 404
    )
    made = client.post(
        f"/api/datasets/{cars['id']}/clone",
        headers=alice,
        json={"owner": "lab", "name": "Copy"},
    )
    assert made.status_code == 201, made.text
    copy = made.json()
    assert (copy["owner"], copy["dataset"], copy["imageCount"], copy["classCount"]) == (
        "lab",
        "copy",
        4,
        3,
    )
    assert labels_of(db, copy["id"]) == labels_of(db, cars["id"])
    hashes = "SELECT hash FROM images WHERE dataset_id = ? ORDER BY hash"
    assert db.query(hashes, [copy["id"]]) == db.query(hashes, [cars["id"]])
    ids = {r["id"] for r in db.query("SELECT id FROM images")}
    assert len(ids) == 8 and all(len(i) == 24 for i in ids)
    detail = client.get("/api/datasets/lab/copy", headers=alice).json()["dataset"]
    assert detail["clonedFrom"] == cars["id"] and detail["visibility"] == "private"
    assert (
        client.get("/api/datasets/alice/cars", headers=alice).json()["dataset"][
            "cloneCount"
        ]
        == 1
    )
    twice = client.post(
        f"/api/datasets/{cars['id']}/clone",
        headers=alice,
        json={"owner": "lab", "name": "Copy"},
    )
    assert twice.status_code == 400
    nowhere = client.post(
        f"/api/datasets/{cars['id']}/clone", headers=alice, json={"owner": "bob"}
    )
    assert nowhere.status_code == 404


def test_create_checks_class_names_like_update(world):
    client, _, alice, _ = parts(world)
    for names in ([""], ["a", "a"], [" "], ["a\u0007"], [1]):
        made = client.post(
            "/api/datasets",
            headers=alice,
            json={"dataset": "n", "name": "N", "classNames": names},
        )
        assert made.status_code == 400, (names, made.text)
    good = client.post(
        "/api/datasets",
        headers=alice,
        json={"dataset": "n", "name": "N", "classNames": ["cat", "dog"]},
    )
    assert good.status_code == 201


def test_private_datasets_are_cloned_by_editors_only(world):
    """A team viewer sees a private dataset but may not copy it out of the team;
    a public one anyone signed in may clone."""
    client, db, alice, _ = parts(world)
    lab = db.user_by_name("lab")
    bob = db.user_by_name("bob")
    db.set_membership(lab["id"], bob["id"], "viewer")
    secret = db.create_dataset(
        owner_id=lab["id"], slug="secret", name="S", task="detect", visibility="private"
    )
    add_images(db, secret["id"], [{"name": "a.jpg"}])
    assert (
        client.get("/api/datasets/lab/secret", headers=world["bob"]).status_code == 200
    )
    denied = client.post(
        "/api/datasets/lab/secret/clone", headers=world["bob"], json={}
    )
    assert denied.status_code == 403 and denied.headers["x-error-code"] == "FORBIDDEN"
    db.set_membership(lab["id"], bob["id"], "editor")
    allowed = client.post(
        "/api/datasets/lab/secret/clone", headers=world["bob"], json={}
    )
    assert allowed.status_code == 201 and allowed.json()["owner"] == "bob"
    db.set_membership(lab["id"], bob["id"], "viewer")
    client.patch(
        "/api/datasets/lab/secret", headers=alice, json={"visibility": "public"}
    )
    again = client.post(
        "/api/datasets/lab/secret/clone", headers=world["bob"], json={"dataset": "s2"}
    )
    assert again.status_code == 201, again.text
    # The same rule for projects and models (a trial found them open).
    project = db.create_project(
        owner_id=lab["id"], slug="tp", name="TP", visibility="private"
    )
    model = db.create_model(project_id=project["id"], slug="m", name="m")
    db.create_project(
        owner_id=bob["id"], slug="mine", name="Mine", visibility="private"
    )
    for path, body in (
        ("/api/projects/lab/tp/clone", {}),
        (f"/api/models/{model['id']}/clone", {"targetProjectSlug": "mine"}),
    ):
        refused = client.post(path, headers=world["bob"], json=body)
        assert refused.status_code == 403, (path, refused.text)


def test_class_stats_count_cache_and_sample(world, monkeypatch):
    client, _, alice, cars = parts(world)
    stats = client.get("/api/datasets/alice/cars/class-stats", headers=alice).json()
    assert stats["classes"] == [
        {"classId": 0, "count": 1, "imageCount": 1},
        {"classId": 1, "count": 3, "imageCount": 2},
        {"classId": 2, "count": 2, "imageCount": 2},
    ]
    assert (
        stats["cached"] is False
        and "sampleSize" not in stats
        and "sampled" not in stats
    )
    image = stats["imageStats"]
    assert image["formatDistribution"] == {"jpg": 4}
    assert image["objectsPerImageHistogram"] == [
        {"bin": 0, "count": 1, "size": 1},
        {"bin": 1, "count": 1, "size": 1},
        {"bin": 2, "count": 1, "size": 1},
        {"bin": 3, "count": 1, "size": 1},
    ]
    assert stats["locationHeatmap"]["bins"][10][10] == 5
    assert stats["locationHeatmap"]["bins"][18][2] == 1
    assert stats["dimensionHeatmap"]["maxCount"] == 4
    assert client.get("/api/datasets/alice/cars/class-stats", headers=alice).json()[
        "cached"
    ]
    client.post(
        "/api/datasets/alice/cars/classes/delete", headers=alice, json={"classIds": [0]}
    )
    fresh = client.get("/api/datasets/alice/cars/class-stats", headers=alice).json()
    assert fresh["cached"] is False and len(fresh["classes"]) == 2
    monkeypatch.setattr(class_stats, "SAMPLE_LIMIT", 2)
    seed = client.get(f"/api/datasets/{cars['id']}/class-stats", headers=alice).json()
    assert seed["cached"] is True  # unchanged dataset: the cache still answers
    client.post(
        "/api/datasets/alice/cars/splits/redistribute",
        headers=alice,
        json={"train": 50, "val": 50, "test": 0},
    )
    seed = client.get(f"/api/datasets/{cars['id']}/class-stats", headers=alice).json()
    assert seed["sampled"] is True and 1 <= seed["sampleSize"] <= 2
    assert sum(c["count"] for c in seed["classes"]) == 5  # counts stay exact


def test_merge_keeps_every_annotation(world):
    client, db, alice, cars = parts(world)
    url = "/api/datasets/alice/cars/classes/merge"
    before = labels_of(db, cars["id"])
    for body in (
        {"sourceClassIds": [], "targetClassId": 0},
        {"sourceClassIds": [7], "targetClassId": 0},
        {"sourceClassIds": [1], "targetClassId": 9},
        {"sourceClassIds": [0], "targetClassId": 0},
        {"sourceClassIds": [True], "targetClassId": 0},
        {"sourceClassIds": list(range(25_001)), "targetClassId": 0},
        {"sourceClassIds": "1", "targetClassId": 0},
    ):
        assert client.post(url, headers=alice, json=body).status_code == 400, body
    assert labels_of(db, cars["id"]) == before
    db.update_dataset(cars["id"], status="processing")
    body = {"sourceClassIds": [0], "targetClassId": 1}
    assert client.post(url, headers=alice, json=body).status_code == 409
    db.update_dataset(cars["id"], status="ready")
    merged = client.post(
        url, headers=alice, json={"sourceClassIds": [0, 0, 2], "targetClassId": 1}
    )
    assert merged.json() == {
        "success": True,
        "classNames": ["bus"],
        "classColors": {},
        "mergedClassIds": [0, 2],
        "targetClassId": 0,
    }
    after = labels_of(db, cars["id"])
    assert after["a.jpg"] == [box(0), box(0), box(0)] and after["c.jpg"] == [box(0)]
    assert sum(len(v or []) for v in after.values()) == 6


def test_delete_classes_shifts_higher_ids_down(world):
    client, db, alice, cars = parts(world)
    add_images(db, cars["id"], [{"name": "bg.jpg", "labels": []}])
    url = f"/api/datasets/{cars['id']}/classes/delete"
    client.patch(
        f"/api/datasets/{cars['id']}",
        headers=alice,
        json={"classColors": {"car": "#ff0000", "van": "#00ff00"}},
    )
    for body in ({"classIds": []}, {"classIds": [3]}, {"classIds": [-1]}, {}):
        assert client.post(url, headers=alice, json=body).status_code == 400
    done = client.post(url, headers=alice, json={"classIds": [0, 0]}).json()
    assert done == {
        "success": True,
        "classNames": ["bus", "van"],
        "classColors": {"van": "#00ff00"},
        "deletedClassIds": [0],
        "deletedAnnotations": 1,
    }
    after = labels_of(db, cars["id"])
    assert after["a.jpg"] == [box(0), box(1)] and after["c.jpg"] == [box(1)]
    done = client.post(url, headers=alice, json={"classIds": [1]}).json()
    assert done["deletedAnnotations"] == 2
    after = labels_of(db, cars["id"])
    assert after["c.jpg"] is None  # nothing left: unlabelled
    assert after["bg.jpg"] == []  # a background image was never this class's


def test_redistribute_is_seeded_and_counts(world):
    client, db, alice, cars = parts(world)
    add_images(db, cars["id"], [{"name": f"x{n}.jpg"} for n in range(6)])
    url = "/api/datasets/alice/cars/splits/redistribute"
    body = {"train": 70, "val": 20, "test": 10}
    first = client.post(url, headers=alice, json=body).json()
    assert first["splits"] == {"train": 7, "val": 2, "test": 1} and first["success"]
    splits = "SELECT id, split FROM images WHERE dataset_id = ? ORDER BY id"
    placed = db.query(splits, [cars["id"]])
    assert client.post(url, headers=alice, json=body).json()["modified"] == 0
    assert db.query(splits, [cars["id"]]) == placed
    other = client.post(url, headers=alice, json={**body, "seed": 7}).json()
    assert other["splits"] == first["splits"]
    for bad in (
        {"train": 70, "val": 20, "test": 20},
        {"train": 101, "val": 0, "test": -1},
        {"train": 100},
    ):
        assert client.post(url, headers=alice, json=bad).status_code == 400
    owner = db.user_by_name("alice")["id"]
    db.create_dataset(
        owner_id=owner, slug="empty", name="E", task="detect", visibility="private"
    )
    empty = client.post(
        "/api/datasets/alice/empty/splits/redistribute", headers=alice, json=body
    )
    assert empty.status_code == 400


def test_models_trained_on_a_dataset(world):
    client, db, alice, cars = parts(world)
    owner = db.user_by_name("alice")["id"]
    project = db.create_project(owner_id=owner, slug="p", name="P", visibility="public")
    db.create_model(
        project_id=project["id"],
        slug="m",
        name="M",
        dataset_id=cars["id"],
        task="detect",
        train_args={"epochs": "3"},
        metrics={"metrics/mAP50(B)": 0.5},
    )
    db.create_model(project_id=project["id"], slug="other", name="O")
    got = client.get(f"/api/datasets/{cars['id']}/models", headers=alice).json()
    assert got["count"] == 1
    model = got["models"][0]
    assert (model["model"], model["epochs"], model["metrics"]) == (
        "m",
        3,
        {"mAP50": 0.5},
    )
    assert (model["_id"], model["projectSlug"]) == (model["id"], "p")  # seed names
    by_slug = client.get("/api/datasets/alice/cars/models", headers=alice).json()
    assert "_id" not in by_slug["models"][0]
    secret = db.create_project(
        owner_id=owner, slug="secret", name="S", visibility="private"
    )
    db.create_model(
        project_id=secret["id"], slug="hidden", name="H", dataset_id=cars["id"]
    )
    db.update_dataset(cars["id"], visibility="public")
    mine = client.get("/api/datasets/alice/cars/models", headers=alice).json()
    assert mine["count"] == 2
    seen = client.get("/api/datasets/alice/cars/models", headers=world["bob"]).json()
    assert [m["model"] for m in seen["models"]] == ["m"]  # not bob's to see


def test_trash_forgets_after_thirty_days(world):
    client, db, alice, cars = parts(world)
    client.delete("/api/datasets/alice/cars", headers=alice)
    with db.atomic() as conn:
        conn.execute(
            "UPDATE datasets SET deleted_at = '2000-01-01T00:00:00.000Z' WHERE id = ?",
            [cars["id"]],
        )
    body = {"id": cars["id"], "type": "dataset"}
    assert client.post("/api/trash", headers=alice, json=body).status_code == 404
    assert db.dataset(cars["id"]) is None
    assert db.scalar("SELECT count(*) FROM images") == 0


def test_the_stock_sdk_drives_every_dataset_operation(world):
    """The ultralytics-platform SDK, unchanged, against these routes."""
    from ultralytics_platform import Platform
    from ultralytics_platform._exceptions import APIError

    client, db, alice, cars = parts(world)
    key = alice["Authorization"].split()[1]
    sdk = Platform(
        base_url="http://testserver", api_key=key, http_client=client, max_retries=0
    )
    assert sdk.datasets.class_stats("alice", "cars")["classes"][1]["count"] == 3
    page = sdk.datasets.images("alice", "cars", limit=2, sort="name-asc")
    rest = sdk.datasets.images(
        "alice", "cars", cursor=page["nextCursor"], sort="name-asc"
    )
    names = [i["name"] for i in page["images"] + rest["images"]]
    assert names == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    ids = [i["id"] for i in page["images"]]
    picked = sdk.datasets.selected_images("alice", "cars", image_ids=ids[:1])
    assert picked["total"] == 1
    image = sdk.images.retrieve(ids[0])
    assert image["properties"]["filename"] == "a.jpg"
    sdk.images.update(ids[0], body={"metadata": {"location": "strasbourg"}})
    assert set(sdk.images.urls(image_ids=ids)["urls"]) == set(ids)
    moved = sdk.images.update_bulk(image_ids=ids, split="test")
    assert moved["modifiedCount"] == 2
    merged = sdk.datasets.merge_classes(
        "alice", "cars", source_class_ids=[2], target_class_id=1
    )
    assert merged["classNames"] == ["car", "bus"]
    deleted = sdk.datasets.delete_classes("alice", "cars", class_ids=[0])
    assert deleted["deletedAnnotations"] == 1
    splits = sdk.datasets.redistribute_splits("alice", "cars", train=50, val=50, test=0)
    assert splits["splits"] == {"train": 2, "val": 2, "test": 0}
    assert sdk.datasets.models("alice", "cars")["count"] == 0
    copy = sdk.datasets.clone("alice", "cars", owner_body="lab", name="Copy")
    assert copy["imageCount"] == 4
    with pytest.raises(APIError) as partial:
        sdk.datasets.clone("alice", "cars", owner_body="lab", image_ids=ids)
    assert partial.value.status_code == 400
    assert sdk.datasets.update("alice", "cars", name="Autos")["dataset"] == "autos"
    assert sdk.images.delete_bulk(image_ids=ids[1:])["deletedCount"] == 1
    assert sdk.images.delete(ids[0])["deletedImageId"] == ids[0]
    assert sdk.datasets.delete("alice", "autos") == {"success": True}
    assert db.trashed_dataset(cars["id"]) is not None


def test_an_upload_for_a_dataset_is_bound_to_it(world):
    """A signed-url whose assetId names a dataset needs the right to change it,
    and its session cannot be ingested into another dataset."""
    client, db, alice, cars = parts(world)
    body = {
        "assetType": "datasets",
        "filename": "a.zip",
        "contentType": "application/zip",
        "totalBytes": 10,
    }
    bob = world["bob"]
    hidden = client.post(
        "/api/upload/signed-url", headers=bob, json={**body, "assetId": cars["id"]}
    )
    assert hidden.status_code == 404
    lab = db.user_by_name("lab")
    db.set_membership(lab["id"], db.user_by_name("bob")["id"], "viewer")
    shared = db.create_dataset(
        owner_id=lab["id"], slug="shared", name="S", task="detect", visibility="private"
    )
    viewer = client.post(
        "/api/upload/signed-url", headers=bob, json={**body, "assetId": shared["id"]}
    )
    assert viewer.status_code == 403
    label = client.post(
        "/api/upload/signed-url", headers=bob, json={**body, "assetId": "anything"}
    )
    assert label.status_code == 200
    made = client.post(
        "/api/upload/signed-url", headers=alice, json={**body, "assetId": "cars"}
    ).json()
    assert client.put(made["uploadUrl"], content=b"0123456789").status_code == 200
    other = db.create_dataset(
        owner_id=db.user_by_name("alice")["id"],
        slug="other",
        name="O",
        task="detect",
        visibility="private",
    )
    assert db.upload(made["sessionId"])["asset_id"] == cars["id"]
    wrong = client.post(
        "/api/datasets/ingest",
        headers=alice,
        json={"sessionId": made["sessionId"], "datasetId": other["id"]},
    )
    assert wrong.status_code == 400 and "another dataset" in wrong.json()["error"]
