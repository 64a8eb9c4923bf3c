"""Webhooks to a site's backend: a real receiver on 127.0.0.1 (AVATAR_SERVER_ALLOW_PRIVATE_TARGETS)
checks every signature with the ``standardwebhooks`` library; session.started / session.ended from
real sessions; a 500 then the retry with the same webhook-id; a server restart between two
attempts; a receiver that hangs does not delay another site's; retries give up after their window;
redelivery; the secret shown once and rotated; the URL rules without private targets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from avatar_server.appkeys import WEBHOOKS
from avatar_server.store.embedded import free_port

from ..harness import ServerHarness, fast_engine_config, make_settings
from ..webhook_receiver import Receiver, verify

ORIGIN = "https://shop.example.com"


@pytest.fixture
async def hooks_server(redis_url: str, data_dir: Path) -> AsyncIterator[ServerHarness]:
    settings = make_settings(data_dir, redis_url, allow_private_targets=True, webhook_retry_seconds=0.4,
                             webhook_timeout=2.0)
    h = await ServerHarness(settings, fast_engine_config()).start()
    try:
        yield h
    finally:
        await h.stop_all()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as r:
        yield r


async def make_site(server: ServerHarness, url: str | None, **kw: Any) -> dict[str, Any]:
    body = {"name": "Shop", "allowedOrigins": [ORIGIN], "avatarIds": ["cooking-teacher"],
            "maxConcurrentSessions": 5, **kw}
    if url is not None:
        body["webhookUrl"] = url
    status, site = await server.admin("POST", "/v1/sites", body)
    assert status == 201, site
    return site


async def deliveries(server: ServerHarness, site_id: str) -> list[dict[str, Any]]:
    status, page = await server.admin("GET", f"/v1/sites/{site_id}/webhook-deliveries")
    assert status == 200, page
    return page["data"]


async def wait_delivery(server: ServerHarness, site_id: str, pred: Any, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        rows = await deliveries(server, site_id)
        hit = [d for d in rows if pred(d)]
        if hit:
            return hit[0]
        assert time.monotonic() < deadline, rows
        await asyncio.sleep(0.05)


async def test_session_started_and_ended_are_signed_and_delivered(hooks_server: ServerHarness,
                                                                   receiver: Receiver) -> None:
    site = await make_site(hooks_server, receiver.url("/ok"))
    secret = site["webhookSecret"]
    assert secret.startswith("whsec_")
    _, got = await hooks_server.admin("GET", f"/v1/sites/{site['id']}")
    assert got["webhookUrl"] == receiver.url("/ok") and "webhookSecret" not in got
    status, conn, _ = await hooks_server.call("POST", "/v1/sessions/connect", token=site["publishableKey"],
                                              json_body={"avatarId": "cooking-teacher"}, headers={"Origin": ORIGIN})
    assert status == 200, conn
    sid = conn["sessionId"]
    started = (await receiver.wait("/ok", 1))[0]
    event = verify(secret, started)
    assert event["type"] == "session.started" and event["data"]["sessionId"] == sid
    assert event["data"]["siteId"] == site["id"] and event["data"]["origin"] == ORIGIN
    assert started.headers["webhook-id"].startswith("msg_")
    await asyncio.sleep(0.3)
    status, _ = await hooks_server.admin("DELETE", f"/v1/sessions/{sid}")
    assert status == 200
    ended = (await receiver.wait("/ok", 2))[1]
    event = verify(secret, ended)
    assert event["type"] == "session.ended" and event["data"]["sessionId"] == sid
    assert event["data"]["endReason"] == "admin" and 0.3 <= event["data"]["durationSeconds"] < 10
    assert ended.headers["webhook-id"] != started.headers["webhook-id"]
    # a forged or stale signature is refused by the receiver's library
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB").verify(ended.body, ended.headers)
    rows = await deliveries(hooks_server, site["id"])
    assert [(d["event"], d["status"], d["attempts"], d["lastStatus"]) for d in rows] == [
        ("session.ended", "delivered", 1, 204), ("session.started", "delivered", 1, 204)]
    assert rows[1]["payload"]["data"]["sessionId"] == sid


async def test_conversation_ready_follows_the_end(hooks_server: ServerHarness, receiver: Receiver) -> None:
    site = await make_site(hooks_server, receiver.url("/ok"))
    status, conn, _ = await hooks_server.call("POST", "/v1/sessions/connect", token=site["publishableKey"],
                                              json_body={"avatarId": "cooking-teacher"}, headers={"Origin": ORIGIN})
    assert status == 200, conn
    await hooks_server.admin("DELETE", f"/v1/sessions/{conn['sessionId']}")
    got = await receiver.wait("/ok", 3, timeout=20)
    events = [verify(site["webhookSecret"], r) for r in got]
    assert [e["type"] for e in events] == ["session.started", "session.ended", "conversation.ready"]
    ready = events[2]["data"]
    assert ready["conversationId"] == ready["sessionId"] == conn["sessionId"] and ready["siteId"] == site["id"]
    assert ready["status"] in ("ended", "failed", "unavailable") and ready["endReason"] == "admin"
    status, conv = await hooks_server.admin("GET", f"/v1/conversations/{ready['conversationId']}")
    assert status == 200 and conv["status"] == ready["status"]


async def test_a_session_that_never_started_sends_nothing(hooks_server: ServerHarness, receiver: Receiver) -> None:
    site = await make_site(hooks_server, receiver.url("/ok"))
    status, created, _ = await hooks_server.call("POST", "/v1/sessions", token=site["publishableKey"],
                                                 json_body={"avatar": {"type": "runway-preset",
                                                                       "presetId": "cooking-teacher"}},
                                                 headers={"Origin": ORIGIN})
    assert status == 201, created
    await hooks_server.admin("DELETE", f"/v1/sessions/{created['id']}")
    await asyncio.sleep(0.5)
    assert receiver.got == [] and await deliveries(hooks_server, site["id"]) == []


async def test_a_500_is_retried_with_the_same_id(hooks_server: ServerHarness, receiver: Receiver) -> None:
    site = await make_site(hooks_server, receiver.url("/fail-once"))
    did = await hooks_server.app[WEBHOOKS].emit(site["id"], "session.started", {"sessionId": "s1"})
    first, second = await receiver.wait("/fail-once", 2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == did
    assert first.body == second.body
    for r in (first, second):
        assert verify(site["webhookSecret"], r)["data"] == {"sessionId": "s1"}
    assert second.at - first.at >= 0.2 - 0.05  # backoff: between half and all of 0.4 s
    d = await wait_delivery(hooks_server, site["id"], lambda d: d["status"] == "delivered")
    assert d["id"] == did and d["attempts"] == 2 and d["lastStatus"] == 204 and d["lastError"] is None


async def test_a_restart_between_two_attempts_loses_nothing(redis_url: str, data_dir: Path,
                                                             receiver: Receiver) -> None:
    settings = make_settings(data_dir, redis_url, allow_private_targets=True, webhook_retry_seconds=4.0)
    server = await ServerHarness(settings, fast_engine_config()).start()
    try:
        site = await make_site(server, receiver.url("/fail-once"))
        did = await server.app[WEBHOOKS].emit(site["id"], "session.ended", {"sessionId": "s2"})
        await receiver.wait("/fail-once", 1)
        d = await wait_delivery(server, site["id"], lambda d: d["attempts"] == 1)
        assert d["status"] == "pending" and d["lastStatus"] == 500 and d["nextAttemptAt"] is not None
        await server.restart()  # the next attempt is due 2–4 s after the first: after the restart
        restarted = time.time()
        second = (await receiver.wait("/fail-once", 2, timeout=15))[1]
        assert second.at > restarted and second.headers["webhook-id"] == did
        assert verify(site["webhookSecret"], second)["type"] == "session.ended"
        d = await wait_delivery(server, site["id"], lambda d: d["status"] == "delivered")
        assert d["attempts"] == 2
    finally:
        await server.stop_all()


async def test_a_hanging_receiver_delays_no_other_site(hooks_server: ServerHarness, receiver: Receiver) -> None:
    slow = await make_site(hooks_server, receiver.url("/hang"), name="slow")
    fast = await make_site(hooks_server, receiver.url("/ok"), name="fast")
    hooks = hooks_server.app[WEBHOOKS]
    for i in range(10):  # more than one site may have in flight at once
        await hooks.emit(slow["id"], "session.started", {"sessionId": f"slow-{i}"})
    await receiver.wait("/hang", hooks.per_site)
    sent = time.time()
    await hooks.emit(fast["id"], "session.started", {"sessionId": "fast"})
    got = (await receiver.wait("/ok", 1, timeout=5))[0]
    assert got.at - sent < 1.0
    assert verify(fast["webhookSecret"], got)["data"]["sessionId"] == "fast"
    # the hanging ones time out (2 s) and are retried; never more than per_site at once
    d = await wait_delivery(hooks_server, slow["id"], lambda d: d["attempts"] >= 1, timeout=10)
    assert d["status"] == "pending" and d["lastStatus"] is None and "no answer within 2 s" in d["lastError"]


async def test_an_attempt_left_pending_by_a_dead_instance_is_taken_over(hooks_server: ServerHarness,
                                                                         receiver: Receiver) -> None:
    site = await make_site(hooks_server, receiver.url("/ok"))
    hooks = hooks_server.app[WEBHOOKS]
    hooks.max_in_flight = 0  # this instance reads nothing for a moment …
    did = await hooks.emit(site["id"], "session.started", {"sessionId": "s7"})
    entries = await hooks.outbox.read("an-instance-that-dies", 10)  # … another reads it, and dies
    assert [f["id"] for _, f in entries] == [did]
    hooks.max_in_flight, hooks.stale_after, hooks._next_claim = 64, 1.0, 0.0
    await asyncio.sleep(0.5)
    assert receiver.got == []  # pending for the dead one, not yet stale
    got = (await receiver.wait("/ok", 1, timeout=10))[0]
    assert got.headers["webhook-id"] == did
    d = await wait_delivery(hooks_server, site["id"], lambda d: d["status"] == "delivered")
    assert d["attempts"] == 1


async def test_retries_give_up_after_their_window(hooks_server: ServerHarness, receiver: Receiver) -> None:
    site = await make_site(hooks_server, receiver.url("/fail"))
    hooks = hooks_server.app[WEBHOOKS]
    hooks.retry_for = 1.5  # 24 h in production
    did = await hooks.emit(site["id"], "session.started", {"sessionId": "s3"})
    d = await wait_delivery(hooks_server, site["id"], lambda d: d["status"] == "failed", timeout=10)
    assert d["id"] == did and d["attempts"] >= 2 and d["lastStatus"] == 500 and d["nextAttemptAt"] is None
    assert {r.headers["webhook-id"] for r in receiver.on("/fail")} == {did}
    # redelivered by hand: due at once, same id, a fresh window
    status, again = await hooks_server.admin("POST", f"/v1/sites/{site['id']}/webhook-deliveries/{did}/redeliver")
    assert status == 202 and again["status"] == "pending" and again["id"] == did
    n = len(receiver.on("/fail"))
    await receiver.wait("/fail", n + 1)
    assert receiver.on("/fail")[-1].headers["webhook-id"] == did


async def test_redeliver_and_its_refusals(hooks_server: ServerHarness, receiver: Receiver) -> None:
    site = await make_site(hooks_server, receiver.url("/ok"))
    other = await make_site(hooks_server, receiver.url("/ok"), name="other")
    did = await hooks_server.app[WEBHOOKS].emit(site["id"], "session.started", {"sessionId": "s4"})
    await wait_delivery(hooks_server, site["id"], lambda d: d["status"] == "delivered")
    status, d = await hooks_server.admin("POST", f"/v1/sites/{site['id']}/webhook-deliveries/{did}/redeliver")
    assert status == 202, d
    second = (await receiver.wait("/ok", 2))[1]
    assert second.headers["webhook-id"] == did
    d = await wait_delivery(hooks_server, site["id"], lambda d: d["attempts"] == 2 and d["status"] == "delivered")
    for path, code in ((f"/v1/sites/{other['id']}/webhook-deliveries/{did}/redeliver", "delivery_not_found"),
                       (f"/v1/sites/{site['id']}/webhook-deliveries/msg_{'0' * 32}/redeliver", "delivery_not_found"),
                       (f"/v1/sites/{site['id']}/webhook-deliveries/nope/redeliver", "delivery_not_found")):
        status, err = await hooks_server.admin("POST", path)
        assert status == 404 and err["error"]["code"] == code, (path, err)
    status, err, _ = await hooks_server.call("POST", f"/v1/sites/{site['id']}/webhook-deliveries/{did}/redeliver")
    assert status == 401, err


async def test_rotating_the_secret_signs_the_next_attempts_with_the_new_one(hooks_server: ServerHarness,
                                                                            receiver: Receiver) -> None:
    site = await make_site(hooks_server, receiver.url("/ok"))
    status, rotated = await hooks_server.admin("POST", f"/v1/sites/{site['id']}/rotate-webhook-secret")
    assert status == 200 and rotated["webhookSecret"].startswith("whsec_")
    assert rotated["webhookSecret"] != site["webhookSecret"] and rotated["id"] == site["id"]
    _, got = await hooks_server.admin("GET", f"/v1/sites/{site['id']}")
    assert "webhookSecret" not in got
    _, page = await hooks_server.admin("GET", "/v1/sites")
    assert all("webhookSecret" not in s for s in page["data"])
    await hooks_server.app[WEBHOOKS].emit(site["id"], "session.started", {"sessionId": "s5"})
    r = (await receiver.wait("/ok", 1))[0]
    assert verify(rotated["webhookSecret"], r)["data"]["sessionId"] == "s5"
    with pytest.raises(WebhookVerificationError):
        verify(site["webhookSecret"], r)
    # no webhookUrl: nothing is queued; PATCH null stops them
    status, patched = await hooks_server.admin("PATCH", f"/v1/sites/{site['id']}", {"webhookUrl": None})
    assert status == 200 and patched["webhookUrl"] is None
    assert await hooks_server.app[WEBHOOKS].emit(site["id"], "session.started", {"sessionId": "s6"}) is None
    status, _ = await hooks_server.admin("POST", f"/v1/sites/{'0' * 8}-0000-4000-8000-{'0' * 12}/rotate-webhook-secret")
    assert status == 404


@pytest.mark.parametrize("url, code", [
    ("http://hooks.example.com/x", "invalid_webhook_url"),
    ("https://127.0.0.1/x", "webhook_url_not_allowed"),
    ("https://[::1]/x", "webhook_url_not_allowed"),
    ("https://localhost/x", "webhook_url_not_allowed"),
    ("https://intranet/x", "webhook_url_not_allowed"),
    ("https://user:pw@hooks.example.org/x", "webhook_url_not_allowed"),
    ("ftp://hooks.example.org/x", "invalid_webhook_url"),
])
async def test_webhook_urls_follow_the_reference_image_rules(server: ServerHarness, url: str, code: str) -> None:
    status, err = await server.admin("POST", "/v1/sites", {"name": "x", "allowedOrigins": [ORIGIN],
                                                           "avatarIds": ["cooking-teacher"],
                                                           "maxConcurrentSessions": 1, "webhookUrl": url})
    assert status == 422 and err["error"]["field"] == "webhookUrl" and err["error"]["code"] == code, err
    site = await make_site(server, None)
    status, err = await server.admin("PATCH", f"/v1/sites/{site['id']}", {"webhookUrl": url})
    assert status == 422 and err["error"]["field"] == "webhookUrl", err


async def test_private_targets_only_with_the_setting(redis_url: str, data_dir: Path) -> None:
    base = make_settings(data_dir, redis_url)
    for allow, want in ((False, 422), (True, 201)):
        h = await ServerHarness(replace(base, allow_private_targets=allow, port=free_port())).start()
        try:
            status, body = await h.admin("POST", "/v1/sites", {"name": "x", "allowedOrigins": [ORIGIN],
                                                               "avatarIds": ["cooking-teacher"],
                                                               "maxConcurrentSessions": 1,
                                                               "webhookUrl": "http://127.0.0.1:9/hook"})
            assert status == want, body
        finally:
            await h.stop_all()
