"""The receiver: signature matrix, storage once per Stripe event id, unknown types, no CSRF or login."""
import hashlib
import hmac
import json
import time

import pytest

from portal.extensions import db
from portal.payments.models import EventStatus, WebhookEvent

SECRET = "whsec_test_current"
OLD_SECRET = "whsec_test_previous"


def sign(body, secret=SECRET, timestamp=None):
    """A Stripe-Signature header exactly as Stripe builds it: HMAC-SHA256 over "t.body"."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def event_body(event_id="evt_1", event_type="invoice.paid", obj=None):
    return json.dumps({"id": event_id, "object": "event", "type": event_type, "created": int(time.time()),
                       "data": {"object": obj or {"id": "in_unknown", "object": "invoice", "metadata": {}}}}).encode()


def deliver(client, body, header):
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = header
    return client.post("/webhooks/stripe", data=body, headers=headers)


def stored():
    db.session.expire_all()
    return db.session.scalars(db.select(WebhookEvent).order_by(WebhookEvent.id)).all()


@pytest.fixture
def receiver(app, client):
    app.config["STRIPE_WEBHOOK_SECRET"] = SECRET
    yield client
    app.config["STRIPE_WEBHOOK_SECRET"] = None


def test_a_valid_delivery_is_stored_and_acknowledged(receiver):
    body = event_body()
    response = deliver(receiver, body, sign(body))
    assert response.status_code == 200 and response.json == {"received": True, "duplicate": False}
    (row,) = stored()
    assert row.stripe_event_id == "evt_1" and row.type == "invoice.paid"
    assert row.payload["data"]["object"]["id"] == "in_unknown" and row.received_at is not None


@pytest.mark.parametrize("case", ["wrong secret", "altered body", "stale", "future", "missing header",
                                  "garbage header", "no v1"])
def test_bad_signatures_get_400_and_write_nothing(receiver, case):
    body = event_body()
    now = int(time.time())
    header = {
        "wrong secret": sign(body, secret="whsec_someone_else"),
        "altered body": sign(body),
        "stale": sign(body, timestamp=now - 301),
        "future": sign(body, timestamp=now + 301),
        "missing header": None,
        "garbage header": "nonsense",
        "no v1": f"t={now}",
    }[case]
    sent = body.replace(b"invoice.paid", b"invoice.void") if case == "altered body" else body
    response = deliver(receiver, sent, header)
    assert response.status_code == 400 and "error" in response.json
    assert stored() == []


def test_timestamps_inside_the_window_either_side_are_accepted(receiver):
    now = int(time.time())
    for n, offset in enumerate((-290, 290)):
        body = event_body(f"evt_edge_{n}")
        assert deliver(receiver, body, sign(body, timestamp=now + offset)).status_code == 200
    assert len(stored()) == 2


def test_a_rotated_secret_accepts_old_and_new_signatures(app, receiver):
    app.config["STRIPE_WEBHOOK_SECRET"] = f"{SECRET}, {OLD_SECRET}"
    new, old = event_body("evt_new"), event_body("evt_old")
    assert deliver(receiver, new, sign(new)).status_code == 200
    assert deliver(receiver, old, sign(old, secret=OLD_SECRET)).status_code == 200
    assert deliver(receiver, old, sign(old, secret="whsec_retired")).status_code == 400
    assert [row.stripe_event_id for row in stored()] == ["evt_new", "evt_old"]


def test_a_duplicate_answers_200_and_stores_nothing_more(receiver):
    body = event_body()
    first, second = deliver(receiver, body, sign(body)), deliver(receiver, body, sign(body))
    assert first.status_code == second.status_code == 200
    assert second.json["duplicate"] is True
    assert len(stored()) == 1


def test_an_unknown_type_is_stored_and_acknowledged_then_ignored(receiver):
    from portal.payments.services import process_event

    body = event_body("evt_cust", "customer.updated", {"id": "cus_1", "object": "customer"})
    assert deliver(receiver, body, sign(body)).status_code == 200
    (row,) = stored()
    assert row.type == "customer.updated"
    assert process_event(row.id) == EventStatus.IGNORED
    assert stored()[0].status == EventStatus.IGNORED


def test_a_signed_body_that_is_not_an_event_is_refused(receiver):
    body = b'{"hello": "world"}'
    assert deliver(receiver, body, sign(body)).status_code == 400
    assert stored() == []


def test_no_secret_configured_refuses_everything(app, client):
    app.config["STRIPE_WEBHOOK_SECRET"] = None
    body = event_body()
    assert deliver(client, body, sign(body)).status_code == 400
    assert stored() == []


def test_the_receiver_needs_no_csrf_or_login_but_only_takes_post(receiver):
    body = event_body()
    assert deliver(receiver, body, sign(body)).status_code == 200  # no session, no CSRF token
    assert receiver.get("/webhooks/stripe").status_code == 405


def test_the_receiver_answers_fast(receiver):
    started = time.perf_counter()
    for n in range(20):
        body = event_body(f"evt_fast_{n}")
        assert deliver(receiver, body, sign(body)).status_code == 200
    assert (time.perf_counter() - started) / 20 < 0.1


def test_the_sweeper_requeues_an_event_whose_job_redis_lost(app, db):
    """The outbox pattern for events too: a stored event no worker picked up goes back on the queue."""
    from datetime import timedelta

    from portal.payments.models import WebhookEvent
    from portal.payments.services import store_event, sweep_received_events
    from portal.queue import get_queue
    from portal.timeutil import utcnow

    event = {"id": "evt_lost", "object": "event", "type": "invoice.paid", "created": 1_800_000_000,
             "data": {"object": {"id": "in_lost", "object": "invoice"}}}
    row_id = store_event("evt_lost", "invoice.paid", 1_800_000_000, event, received_via="webhook")
    db.session.commit()
    assert sweep_received_events() == []  # just arrived: its own job may still be on the way

    db.session.get(WebhookEvent, row_id).received_at = utcnow() - timedelta(minutes=11)
    db.session.commit()
    assert sweep_received_events() == [row_id]
    assert [job.args[0] for job in get_queue().jobs if job.func_name.endswith("process_webhook_event")] == [row_id]
