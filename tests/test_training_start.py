"""Starting and resuming training: checks a trial found missing. Concurrent
starts of one model make one job (five runs once lost four runs' metrics),
paths on the appliance and mismatched tasks are refused, and a run that
finished all its epochs is not resumed."""

from __future__ import annotations

import asyncio

import httpx
from conftest import Api, add_images, make_app
from starlette.testclient import TestClient


def test_concurrent_starts_of_one_model_make_one_job(home):
    app, key = make_app(home, run_queue=False)  # jobs stay queued: nothing trains
    with TestClient(app) as client:
        api = Api(client, key)
        made = api(
            "POST",
            "/api/datasets",
            201,
            json={"dataset": "ds", "name": "DS", "classNames": ["a"]},
        )
        box = [{"classId": 0, "bbox": [0.5, 0.5, 0.2, 0.2]}]
        add_images(
            app.state.services.db,
            made["id"],
            [
                {"name": "t.jpg", "labels": box},
                {"name": "v.jpg", "labels": box, "split": "val"},
            ],
            blobs=app.state.services.blobs,
        )
        api("POST", "/api/projects", 201, json={"project": "p", "name": "P"})
        model = api("POST", "/api/models", 201, json={"project": "p", "model": "m"})
        body = {
            "modelId": model["id"],
            "trainArgs": {
                "model": "yolo26n.yaml",
                "data": "ul://alice/datasets/ds",
                "epochs": 1,
                "imgsz": 32,
            },
        }

        async def start_many() -> list[int]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver"
            ) as concurrent:
                replies = await asyncio.gather(
                    *(
                        concurrent.post(
                            "/api/training/start", json=body, headers=api.auth
                        )
                        for _ in range(6)
                    )
                )
            return sorted(r.status_code for r in replies)

        assert asyncio.run(start_many()) == [200] + [409] * 5
        jobs = app.state.services.db.query(
            "SELECT id FROM jobs WHERE kind = 'train' AND subject_id = ?", [model["id"]]
        )
        assert len(jobs) == 1


def test_arguments_that_name_paths_on_the_appliance_are_refused():
    """A trial read the keys of any YAML on the server through `cfg`, and probed
    which files exist; the appliance chooses its own paths."""
    import pytest

    from appliance.errors import Invalid
    from appliance.trainargs import check_arguments

    for key, value in (
        ("cfg", "/etc/passwd"),
        ("tracker", "/tmp/x.yaml"),
        ("resume", "/etc/passwd"),
        ("project", "../../x"),
        ("name", "/tmp/evil"),
    ):
        with pytest.raises(Invalid, match=f"trainArgs.{key} names a path"):
            check_arguments({"epochs": 1, key: value})
    check_arguments({"epochs": 1, "imgsz": 32})


def test_a_model_or_task_that_does_not_fit_the_dataset_is_refused():
    """A trial saw `task: segment` on a detect dataset fail in the trainer with a
    traceback; it is a 400 that says why."""
    import pytest

    from appliance.errors import Invalid
    from appliance.routes.training import _check_task, task_of_model_name

    detect = {"task": "detect", "slug": "ds"}
    assert task_of_model_name("yolo26n-seg.yaml") == "segment"
    assert task_of_model_name("ul://ultralytics/yolo26/yolo26n-pose") == "pose"
    assert task_of_model_name("yolo26n.pt") == "detect"
    assert task_of_model_name("my-weights.pt") is None  # the name does not tell
    _check_task({"model": "yolo26n.yaml"}, detect, None)
    _check_task({"model": "my-weights.pt"}, detect, None)
    for args, base in (
        ({"model": "yolo26n-seg.yaml"}, None),
        ({"model": "yolo26n.yaml", "task": "segment"}, None),
        ({"model": "ul://alice/p/m"}, "classify"),
    ):
        with pytest.raises(Invalid, match="trainArgs"):
            _check_task(args, detect, base)


def test_a_run_with_all_its_epochs_done_is_not_resumable(tmp_path):
    """An appliance killed between the last epoch and the end of the run leaves
    a last.pt of the final epoch: resume answers 409 rather than ultralytics'
    'nothing to resume' error."""
    import torch

    from appliance.routes.training import _all_epochs_done

    def saved(name: str, epoch: int) -> object:
        path = tmp_path / name
        torch.save({"epoch": epoch, "train_args": {"epochs": 3}, "optimizer": {}}, path)
        return path

    assert _all_epochs_done(saved("done.pt", 2))
    assert not _all_epochs_done(saved("mid.pt", 0))
