import time

import pytest
from conftest import make_app
from starlette.testclient import TestClient
from ultralytics_platform import Platform

from appliance.app import create_app
from appliance.ratelimit import category, parse_limits
from appliance.settings import SettingsError, load_settings


def _app(home, **limits):
    return make_app(home, run_queue=False, **limits)


def test_categories():
    assert category("POST", "/api/training/start") == "training"
    assert category("POST", "/api/models/a/b/c/predict") == "predict"
    assert category("POST", "/api/datasets/a/b/ingest") == "upload"
    assert category("POST", "/api/models/a/b/c/exports") == "export"
    assert category("GET", "/api/models/a/b/c/files") == "download"
    assert category("GET", "/api/datasets/a") == "default"
    assert category("POST", "/api/images/" + "a" * 24 + "/predict") == "predict"
    assert category("POST", "/api/datasets/" + "A" * 20 + "/predict") == "predict"
    assert category("POST", "/api/datasets/lab/ds/annotate") == "predict"
    assert category("POST", "/api/datasets/lab/ds/export") == "export"


def test_per_key_categories_are_independent_and_say_when_to_retry(home):
    limits = {**parse_limits(""), "default": 3, "predict": 2}
    # A window far longer than the test, so no window boundary falls inside it.
    app, key = _app(home, rate_limits=limits, ip_rate_limit=0, rate_window=10**6)
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(app) as client:
        for left in (2, 1, 0):
            ok = client.get("/api/account/summary", headers=auth)
            assert ok.status_code == 200 and ok.headers["x-ratelimit-remaining"] == str(
                left
            )
        limited = client.get("/api/account/summary", headers=auth)
        assert limited.status_code == 429
        assert limited.json()["error"].startswith("Rate limit exceeded")
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.headers["x-ratelimit-limit"] == "3"
        assert limited.headers["x-ratelimit-remaining"] == "0"
        assert limited.headers["x-ratelimit-reset"].endswith("Z")
        assert limited.headers["x-error-code"] == "RATE_LIMITED"
        # The predict budget is its own.
        predict = client.post("/api/models/alice/p/m/predict", headers=auth)
        assert (
            predict.status_code == 404 and predict.headers["x-ratelimit-limit"] == "2"
        )


def test_per_address_limit_covers_anonymous_calls(home):
    app, _ = _app(home, ip_rate_limit=5, rate_window=10**6)
    with TestClient(app) as client:
        codes = [client.get("/api/datasets/alice").status_code for _ in range(7)]
    assert codes == [200] * 5 + [429] * 2


def test_the_sdk_waits_and_retries_on_429(home):
    app, key = _app(
        home,
        rate_limits={**parse_limits(""), "default": 2},
        ip_rate_limit=0,
        rate_window=2,
    )
    with TestClient(app) as client:
        sdk = Platform(base_url="http://testserver", api_key=key, http_client=client)
        started = time.monotonic()
        names = [sdk.account.summary()["username"] for _ in range(3)]
        assert names == ["alice"] * 3
        assert (
            time.monotonic() - started >= 0.5
        )  # the third call waited for Retry-After


def test_limits_are_configurable_and_checked():
    assert parse_limits("training=2, predict=0")["training"] == 2
    with pytest.raises(ValueError):
        parse_limits("bogus=3")
    with pytest.raises(SettingsError):
        load_settings(environ={"APPLIANCE_RATE_LIMITS": "training=lots"})


def test_sliding_window_stops_a_burst_across_the_boundary():
    from appliance.ratelimit import _Windows

    windows = _Windows(60)
    allowed = [
        windows.hit("k", 10, 59.0)[0] for _ in range(10)
    ]  # the end of one window
    assert all(allowed)
    burst = [windows.hit("k", 10, 61.0)[0] for _ in range(10)]  # just after the reset
    assert burst.count(True) <= 1
    later = [
        windows.hit("k", 10, 119.0)[0] for _ in range(10)
    ]  # the old window has faded
    assert later.count(True) >= 8


def test_sessions_are_limited_like_keys(home):
    from appliance.secrets_ import hash_secret

    limits = {**parse_limits(""), "upload": 2}
    settings = load_settings(environ={}, home=str(home), public_url="http://testserver")
    app = create_app(
        settings.with_overrides(rate_limits=limits, ip_rate_limit=0), run_queue=False
    )
    app.state.services.db.create_user("sue", password_hash=hash_secret("sue-password"))
    with TestClient(app) as client:
        csrf = client.post(
            "/api/auth/login", json={"username": "sue", "password": "sue-password"}
        ).json()
        codes = [
            client.post(
                "/api/upload/signed-url",
                json={},
                headers={"X-CSRF-Token": csrf["csrfToken"]},
            ).status_code
            for _ in range(3)
        ]
    assert codes == [400, 400, 429]
