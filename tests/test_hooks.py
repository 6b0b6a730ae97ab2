"""Outgoing webhooks: registration by workspace admins, signed deliveries to a real
receiver on 127.0.0.1, retries after 500s with backoff, the delivery log, an
outbox that survives a restart, and the events a real training and export raise."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import Api, base_files, make_app, write_zip
from starlette.testclient import TestClient

from appliance import hooks
from appliance.keys import create_key


class Receiver:
    """A real HTTP server on a free loopback port that records every POST and
    answers with the next scripted status (200 once the script runs out)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.received: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.received.append(
                    {"headers": dict(self.headers), "body": body, "status": status}
                )
                self.send_response(status)
                if status in (301, 302):
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[str]:
        return [json.loads(r["body"])["event"] for r in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def _wait(condition, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def _fast(home, **overrides):
    """The app with retries a few hundredths of a second apart."""
    return make_app(
        home, **{"webhook_retry_seconds": 0.05, "webhook_attempts": 3, **overrides}
    )


def test_register_list_update_delete_and_secret_shown_once(home, receiver):
    app, key = _fast(home)
    with TestClient(app) as client:
        api = Api(client, key)
        created = api(
            "POST",
            "/api/webhooks",
            201,
            json={"url": receiver.url, "events": ["training.completed"]},
        )["webhook"]
        secret = created["secret"]
        assert secret.startswith("whsec_") and len(secret) == 54
        assert created["events"] == ["training.completed"] and created["active"]
        assert created["owner"] == "alice" and created["secretHint"].endswith(
            secret[-4:]
        )

        listed = api("GET", "/api/webhooks")["webhooks"]
        assert [h["id"] for h in listed] == [created["id"]]
        assert "secret" not in listed[0]
        one = api("GET", f"/api/webhooks/{created['id']}")["webhook"]
        assert "secret" not in one and one["url"] == receiver.url

        changed = api(
            "PATCH",
            f"/api/webhooks/{created['id']}",
            json={"events": ["export.completed", "training.started"], "active": False},
        )["webhook"]
        assert changed["events"] == ["training.started", "export.completed"]
        assert changed["active"] is False and "secret" not in changed
        for bad in ({"url": "http://example.com/"}, {"active": "yes"}, {"events": []}):
            api("PATCH", f"/api/webhooks/{created['id']}", 400, json=bad)
        assert api("GET", f"/api/webhooks/{created['id']}")["webhook"] == changed
        rotated = api(
            "PATCH", f"/api/webhooks/{created['id']}", json={"rotateSecret": True}
        )["webhook"]
        assert rotated["secret"] != secret and rotated["secret"].startswith("whsec_")

        assert api("DELETE", f"/api/webhooks/{created['id']}")["deleted"] is True
        api("GET", f"/api/webhooks/{created['id']}", 404)
        assert api("GET", "/api/webhooks")["webhooks"] == []


@pytest.mark.parametrize(
    "url,reason",
    [
        ("ftp://127.0.0.1/x", "http:// or https://"),
        ("http://example.com/hook", "APPLIANCE_WEBHOOK_HOSTS"),
        ("http://10.0.0.5/hook", "not allowed"),
        ("http://user:pw@127.0.0.1/hook", "credentials"),
        ("http://127.0.0.1:99999/hook", "not a valid URL"),
        ("not a url", "http:// or https://"),
    ],
)
def test_urls_outside_the_allow_list_are_refused(home, url, reason):
    app, key = make_app(home, run_queue=False)
    with TestClient(app) as client:
        refused = Api(client, key)("POST", "/api/webhooks", 400, json={"url": url})
    assert reason in refused["error"]


def test_bad_events_are_refused_and_the_operator_may_allow_a_host(home):
    app, key = make_app(
        home, run_queue=False, webhook_hosts=("127.0.0.1", "ci.lab.internal")
    )
    with TestClient(app) as client:
        api = Api(client, key)
        bad = api(
            "POST",
            "/api/webhooks",
            400,
            json={"url": "http://127.0.0.1/x", "events": ["training.done"]},
        )
        assert "training.done" in bad["error"]
        api("POST", "/api/webhooks", 400, json={"url": "http://x/", "events": []})
        api("POST", "/api/webhooks", 201, json={"url": "https://ci.lab.internal/h"})


def test_only_workspace_admins_manage_its_webhooks(home, receiver):
    app, _ = make_app(home, run_queue=False)
    db = app.state.services.db
    owner = db.create_user("olga")
    team = db.create_team("lab", "Lab", owner["id"])
    keys = {"owner": create_key(db, owner["id"])}
    for role in ("admin", "editor", "viewer"):
        user = db.create_user(f"a-{role}")
        db.set_membership(team["id"], user["id"], role)
        keys[role] = create_key(db, user["id"])
    keys["stranger"] = create_key(db, db.create_user("zed")["id"])
    body = {"url": receiver.url, "owner": "lab"}
    with TestClient(app) as client:
        apis = {name: Api(client, key) for name, key in keys.items()}
        hook = apis["admin"]("POST", "/api/webhooks", 201, json=body)["webhook"]
        assert hook["owner"] == "lab"
        for name, status in (("editor", 403), ("viewer", 403), ("stranger", 404)):
            apis[name]("POST", "/api/webhooks", status, json=body)
            apis[name]("GET", "/api/webhooks?owner=lab", status)
            apis[name]("GET", f"/api/webhooks/{hook['id']}", status)
            apis[name]("GET", f"/api/webhooks/{hook['id']}/deliveries", status)
        listed = apis["owner"]("GET", "/api/webhooks?owner=lab")["webhooks"]
        assert [h["id"] for h in listed] == [hook["id"]]
        assert apis["owner"]("GET", "/api/webhooks")["webhooks"] == []  # personal
        assert client.get("/api/webhooks").status_code == 401


def test_delivery_is_signed_retried_after_500s_and_logged(home):
    receiver = Receiver([500, 500, 200])
    app, key = _fast(home, webhook_attempts=4)
    try:
        with TestClient(app) as client:
            api = Api(client, key)
            hook = api("POST", "/api/webhooks", 201, json={"url": receiver.url})
            secret, hook_id = hook["webhook"]["secret"], hook["webhook"]["id"]
            ping = api("POST", f"/api/webhooks/{hook_id}/test", 202)
            _wait(lambda: len(receiver.received) == 3, what="three attempts")
            log = _wait(
                lambda: (
                    (rows := api("GET", f"/api/webhooks/{hook_id}/deliveries"))[
                        "deliveries"
                    ][0]["outcome"]
                    == "delivered"
                    and rows
                ),
                what="the log",
            )
    finally:
        receiver.close()

    assert [r["status"] for r in receiver.received] == [500, 500, 200]
    for record in receiver.received:
        headers = record["headers"]
        assert headers["Content-Type"] == "application/json"
        assert headers["X-Appliance-Event"] == "ping"
        assert headers["X-Appliance-Delivery"] == ping["eventId"]
        assert hooks.verify(
            secret,
            headers["X-Appliance-Timestamp"],
            record["body"],
            headers["X-Appliance-Signature"],
        )
        assert not hooks.verify(
            "whsec_wrong",
            headers["X-Appliance-Timestamp"],
            record["body"],
            headers["X-Appliance-Signature"],
        )
        assert not hooks.verify(  # an old request cannot be replayed
            secret,
            str(int(headers["X-Appliance-Timestamp"]) - 3600),
            record["body"],
            headers["X-Appliance-Signature"],
        )
    payload = json.loads(receiver.received[-1]["body"])
    assert payload == {
        "id": ping["eventId"],
        "event": "ping",
        "createdAt": payload["createdAt"],
        "owner": "alice",
        "data": {"webhookId": hook_id},
    }

    rows = log["deliveries"]
    assert [(r["attempt"], r["statusCode"], r["outcome"]) for r in rows] == [
        (3, 200, "delivered"),
        (2, 500, "retrying"),
        (1, 500, "retrying"),
    ]
    assert rows[1]["error"] == "HTTP 500" and rows[0]["error"] is None
    assert all(r["durationMs"] >= 0 and r["eventId"] == ping["eventId"] for r in rows)
    assert log["pending"] == 0


def test_attempts_are_capped_and_redirects_and_dead_receivers_fail(home):
    receiver = Receiver([500, 302, 500, 500])
    app, key = _fast(home, webhook_attempts=2)
    try:
        with TestClient(app) as client:
            api = Api(client, key)
            hook_id = api("POST", "/api/webhooks", 201, json={"url": receiver.url})[
                "webhook"
            ]["id"]
            api("POST", f"/api/webhooks/{hook_id}/test", 202)
            rows = _wait(
                lambda: (
                    len(
                        rows := api("GET", f"/api/webhooks/{hook_id}/deliveries")[
                            "deliveries"
                        ]
                    )
                    == 2
                    and rows
                ),
                what="two attempts",
            )
            time.sleep(0.3)  # no third attempt comes
            after = api("GET", f"/api/webhooks/{hook_id}/deliveries")
            dead = Receiver()
            dead.close()  # nothing listens on its port any more
            api("PATCH", f"/api/webhooks/{hook_id}", json={"url": dead.url})
            second = api("POST", f"/api/webhooks/{hook_id}/test", 202)["eventId"]

            def dead_attempts():
                listed = api("GET", f"/api/webhooks/{hook_id}/deliveries")
                mine = [r for r in listed["deliveries"] if r["eventId"] == second]
                return len(mine) == 2 and mine

            refused = _wait(dead_attempts, what="the dead receiver's attempts")
    finally:
        receiver.close()
    assert [(r["statusCode"], r["outcome"]) for r in rows] == [
        (302, "failed"),
        (500, "retrying"),
    ]
    assert rows[0]["error"] == "HTTP 302"
    assert len(after["deliveries"]) == 2 and after["pending"] == 0
    assert len(receiver.received) == 2
    assert [(r["statusCode"], r["outcome"]) for r in refused] == [
        (None, "failed"),
        (None, "retrying"),
    ]
    assert "Connection refused" in refused[0]["error"]


def test_a_disabled_or_unsubscribed_webhook_gets_nothing(home, receiver):
    app, key = _fast(home)
    db = app.state.services.db
    with TestClient(app) as client:
        api = Api(client, key)
        listening = api(
            "POST",
            "/api/webhooks",
            201,
            json={"url": receiver.url, "events": ["export.completed"]},
        )["webhook"]
        off = api("POST", "/api/webhooks", 201, json={"url": receiver.url})["webhook"]
        api("PATCH", f"/api/webhooks/{off['id']}", json={"active": False})
        alice = db.user_by_name("alice")
        assert hooks.emit(db, alice["id"], "training.started", {"n": 1}) is None
        assert hooks.emit(db, alice["id"], "export.completed", {"n": 2})
        _wait(lambda: receiver.received, what="the export event")
        time.sleep(0.3)
    assert receiver.events() == ["export.completed"]
    assert json.loads(receiver.received[0]["body"])["data"] == {"n": 2}
    del listening


def test_pending_deliveries_survive_a_restart(home, receiver):
    app, key = _fast(home, run_queue=False)  # no delivery thread: owed, not sent
    db = app.state.services.db
    with TestClient(app) as client:
        hook = Api(client, key)(
            "POST", "/api/webhooks", 201, json={"url": receiver.url}
        )["webhook"]
    alice = db.user_by_name("alice")
    event_id = hooks.emit(db, alice["id"], "training.completed", {"modelId": "m"})
    assert db.pending_deliveries(hook["id"]) == 1
    time.sleep(0.3)
    assert receiver.received == []

    from appliance.app import create_app

    again = create_app(app.state.services.settings)  # the same data home
    with TestClient(again):
        _wait(lambda: receiver.received, what="the owed delivery")
    assert receiver.received[0]["headers"]["X-Appliance-Delivery"] == event_id
    assert again.state.services.db.pending_deliveries(hook["id"]) == 0


def test_training_failed_carries_the_error(home, receiver):
    app, key = _fast(home, run_queue=False)
    db = app.state.services.db
    with TestClient(app) as client:
        Api(client, key)("POST", "/api/webhooks", 201, json={"url": receiver.url})
    alice = db.user_by_name("alice")
    project = db.create_project(
        owner_id=alice["id"], slug="p", name="P", visibility="private"
    )
    model = db.create_model(project_id=project["id"], slug="m", name="M")
    job = db.create_job("train", model["id"], alice["id"])
    app.state.services.queue.finish(
        job["id"],
        "failed",
        error={"message": "CUDA out of memory", "code": "training_failed"},
    )
    app.state.services.queue.finish(job["id"], "cancelled")  # no event for a cancel
    [item] = db.due_deliveries()
    payload = json.loads(item["body"])
    assert payload["event"] == "training.failed"
    assert payload["data"] == {
        "modelId": model["id"],
        "model": "ul://alice/p/m",
        "project": "p",
        "name": "M",
        "jobId": job["id"],
        "error": {"message": "CUDA out of memory", "code": "training_failed"},
    }


def test_a_real_training_and_export_raise_their_events(home, receiver):
    """One epoch at imgsz 32 on the four-image BASE dataset, then a TorchScript
    export: started, one epoch, completed, export.completed, in that order."""
    app, key = _fast(home)
    with TestClient(app) as client:
        api = Api(client, key)
        hook = api("POST", "/api/webhooks", 201, json={"url": receiver.url})["webhook"]
        api("POST", "/api/datasets", 201, json={"dataset": "t", "name": "T"})
        dataset = api.ingest(
            "t", "t.zip", write_zip(home / "t.zip", base_files()).read_bytes()
        )
        assert dataset["status"] == "ready"
        api("POST", "/api/projects", 201, json={"project": "p", "name": "P"})
        model = api("POST", "/api/models", 201, json={"project": "p", "model": "m"})
        api(
            "POST",
            "/api/training/start",
            json={
                "modelId": model["id"],
                "trainArgs": {
                    "model": "yolo26n.yaml",
                    "data": "ul://alice/datasets/t",
                    "epochs": 1,
                    "imgsz": 32,
                    "batch": 4,
                },
            },
        )
        _wait(
            lambda: (
                "training.completed" in receiver.events()
                or "training.failed" in receiver.events()
            ),
            300,
            "training",
        )
        export = api(
            "POST",
            "/api/models/alice/p/m/exports",
            201,
            json={"format": "torchscript", "args": {"imgsz": 32}},
        )
        _wait(lambda: "export.completed" in receiver.events(), 300, "export")
        log = api("GET", f"/api/webhooks/{hook['id']}/deliveries")

    assert receiver.events() == [
        "training.started",
        "training.epoch",
        "training.completed",
        "export.completed",
    ]
    bodies = [json.loads(r["body"]) for r in receiver.received]
    for body in bodies:
        assert body["data"]["modelId"] == model["id"]
        assert body["data"]["model"] == "ul://alice/p/m"
    assert bodies[0]["data"]["device"] == "cpu"
    assert bodies[1]["data"]["epoch"] == 1 and bodies[1]["data"]["epochs"] == 1
    assert "metrics/mAP50(B)" in bodies[1]["data"]["metrics"]
    assert bodies[2]["data"]["hasWeights"] is True
    assert bodies[3]["data"]["exportId"] == export["id"]
    assert bodies[3]["data"]["format"] == "torchscript"
    assert bodies[3]["data"]["filename"].endswith(".torchscript")
    assert [d["outcome"] for d in log["deliveries"]] == ["delivered"] * 4


def test_a_run_streamed_by_stock_yolo_train_raises_the_same_events(home, receiver):
    """The sync events ultralytics sends (training_started, epoch_end, the extra
    final epoch_end, training_complete) become training.started, one
    training.epoch per epoch and training.completed."""
    from test_webhooks import _epoch, _event, _started

    app, key = _fast(home)
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(app) as client:
        Api(client, key)("POST", "/api/webhooks", 201, json={"url": receiver.url})
        model_id = _started(client, auth, epochs=2).json()["modelId"]
        for epoch in (0, 1):
            assert _event(client, auth, model_id, "epoch_end", _epoch(epoch)).is_success
        final = {"epoch": 2, "metrics": {"metrics/mAP50-95(B)": 0.2}}
        assert _event(client, auth, model_id, "epoch_end", final).is_success
        done = {"results": {"metrics": {"metrics/mAP50-95(B)": 0.2}}}
        assert _event(client, auth, model_id, "training_complete", done).is_success
        _wait(lambda: len(receiver.received) == 4, what="four events")
        time.sleep(0.3)
    assert receiver.events() == [
        "training.started",
        "training.epoch",
        "training.epoch",
        "training.completed",
    ]
    bodies = [json.loads(r["body"])["data"] for r in receiver.received]
    assert [b.get("epoch") for b in bodies[1:3]] == [1, 2]
    assert bodies[1]["metrics"]["train/box_loss"] == 1.0
    assert bodies[3]["metrics"] == {"metrics/mAP50-95(B)": 0.2}
    assert all(b["model"] == "ul://alice/proj/my-run" for b in bodies)


def test_webhook_settings_are_read_and_checked():
    from appliance.settings import SettingsError, load_settings

    settings = load_settings(
        environ={
            "APPLIANCE_WEBHOOK_HOSTS": " CI.lab.internal, [::1] ,127.0.0.1",
            "APPLIANCE_WEBHOOK_RETRY_SECONDS": "0.5",
            "APPLIANCE_WEBHOOK_ATTEMPTS": "4",
        }
    )
    assert settings.webhook_hosts == ("ci.lab.internal", "::1", "127.0.0.1")
    assert settings.webhook_retry_seconds == 0.5 and settings.webhook_attempts == 4
    assert hooks.check_url("http://[::1]:8080/h", settings.webhook_hosts)
    default = load_settings(environ={})
    assert default.webhook_hosts == ("127.0.0.1", "localhost")
    assert (default.webhook_retry_seconds, default.webhook_attempts) == (120.0, 6)
    assert load_settings(environ={"APPLIANCE_WEBHOOK_HOSTS": ""}).webhook_hosts == ()
    for name, value in (
        ("APPLIANCE_WEBHOOK_HOSTS", "a b"),
        ("APPLIANCE_WEBHOOK_HOSTS", "http://x/"),
        ("APPLIANCE_WEBHOOK_RETRY_SECONDS", "0"),
        ("APPLIANCE_WEBHOOK_RETRY_SECONDS", "soon"),
        ("APPLIANCE_WEBHOOK_ATTEMPTS", "0"),
    ):
        with pytest.raises(SettingsError):
            load_settings(environ={name: value})


def test_a_webhook_deleted_during_an_attempt_leaves_no_log(home, receiver):
    app, _ = make_app(home, run_queue=False)
    db = app.state.services.db
    alice = db.user_by_name("alice")
    hook = db.create_webhook(alice["id"], receiver.url, list(hooks.EVENTS), "s")
    hooks.emit(db, alice["id"], "training.started", {})
    [item] = db.due_deliveries()
    db.delete_webhook(hook["id"])
    settled = db.record_attempt(
        item, status_code=200, duration_ms=1, error=None, retry_at=None
    )
    assert settled == "gone"
    assert db.scalar("SELECT count(*) FROM webhook_deliveries") == 0


def test_deleting_a_workspace_takes_its_webhooks_and_what_they_were_owed(home):
    from appliance.gdpr import delete_everything

    app, _ = make_app(home, run_queue=False)
    db = app.state.services.db
    alice = db.user_by_name("alice")
    hook = db.create_webhook(alice["id"], "http://127.0.0.1:9/", ["ping"], "s")
    hooks.ping(db, hook)
    [item] = db.due_deliveries()
    db.record_attempt(
        item, status_code=500, duration_ms=1, error="HTTP 500", retry_at=0
    )
    delete_everything(db, app.state.services.blobs, alice["id"])
    for table in ("webhooks", "webhook_outbox", "webhook_deliveries"):
        assert db.scalar(f"SELECT count(*) FROM {table}") == 0, table


def test_a_diverged_loss_is_sent_as_null_not_nan(home):
    app, _ = make_app(home, run_queue=False)
    db = app.state.services.db
    alice = db.user_by_name("alice")
    db.create_webhook(alice["id"], "http://127.0.0.1:9/", ["training.epoch"], "s")
    data = {"metrics": {"loss": float("nan"), "lr": float("inf"), "ok": 0.5}}
    hooks.emit(db, alice["id"], "training.epoch", data)
    [item] = db.due_deliveries()
    sent = json.loads(item["body"], parse_constant=lambda c: pytest.fail(c))
    assert sent["data"] == {"metrics": {"loss": None, "lr": None, "ok": 0.5}}


def test_the_wait_between_attempts_doubles(home):
    receiver = Receiver([500] * 6)
    app, _ = make_app(home, run_queue=False, webhook_retry_seconds=100.0)
    db = app.state.services.db
    alice = db.user_by_name("alice")
    db.create_webhook(alice["id"], receiver.url, ["training.started"], "s")
    hooks.emit(db, alice["id"], "training.started", {})
    deliverer = hooks.Deliverer(db, app.state.services.settings)
    waits = []
    try:
        for _ in range(6):
            [item] = db.query("SELECT * FROM webhook_outbox")
            before = time.time()
            outcome = deliverer.attempt(item)
            after = db.query("SELECT * FROM webhook_outbox")
            if outcome == "retrying":
                waits.append(round(after[0]["due"] - before, -1))
    finally:
        receiver.close()
    assert waits == [100.0, 200.0, 400.0, 800.0, 1600.0]  # 3,100 s: about an hour
    assert outcome == "failed" and after == [] and len(receiver.received) == 6
