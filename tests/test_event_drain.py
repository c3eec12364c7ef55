"""One queued drain applies many stored events: arrival order, a job per event only for retries, locks respected."""
import threading
import time

from portal.billing.models import BillingRecord, BillingStatus
from portal.extensions import db
from portal.payments import tasks
from portal.payments.models import EventStatus, WebhookEvent
from portal.payments.services import DRAIN_EVENTS, PROCESS_EVENT, drain_marker, process_event
from portal.queue import get_queue
from tests.fixtures.billing import billed_record
from tests.test_webhooks import SECRET, deliver, event_body, sign

INVOICE = "in_drain_1"


def paid_body(event_id):
    invoice = {"id": INVOICE, "object": "invoice", "metadata": {}, "amount_paid": 17000, "status": "paid"}
    return event_body(event_id, "invoice.paid", invoice)


def queued(func_name):
    return [job for job in get_queue().jobs if job.func_name == func_name]


def events():
    db.session.expire_all()
    return db.session.scalars(db.select(WebhookEvent).order_by(WebhookEvent.id)).all()


def test_many_deliveries_queue_one_drain_that_applies_them_all_in_order(app, client, monkeypatch):
    monkeypatch.setitem(app.config, "STRIPE_WEBHOOK_SECRET", SECRET)
    billed = billed_record()
    billed.record.stripe_invoice_id = INVOICE
    db.session.commit()
    bodies = [paid_body("evt_paid"), event_body("evt_customer", "customer.updated", {"id": "cus_1"})]
    for body in bodies:
        assert deliver(client, body, sign(body)).status_code == 200
    # One job stands for both events, instead of a job each.
    assert len(queued(DRAIN_EVENTS)) == 1 and queued(PROCESS_EVENT) == []

    assert tasks.process_received_events() == 2
    assert [(e.stripe_event_id, e.status, e.attempts) for e in events()] == [
        ("evt_paid", EventStatus.PROCESSED, 1), ("evt_customer", EventStatus.IGNORED, 1)]
    assert db.session.get(BillingRecord, billed.record.id).status == BillingStatus.PAID
    # The drain cleared its marker when it started: the next delivery queues a fresh drain.
    assert get_queue().connection.get(drain_marker()) is None
    body = event_body("evt_later", "customer.updated", {"id": "cus_1"})
    assert deliver(client, body, sign(body)).status_code == 200
    assert len(queued(DRAIN_EVENTS)) == 2


def failing_payment(event_id):
    """A payment without our metadata needs Stripe to find its invoice, and Stripe is not configured here."""
    from portal.payments.services import store_event

    payload = {"id": event_id, "type": "payment_intent.processing", "created": int(time.time()),
               "data": {"object": {"id": "pi_1", "object": "payment_intent", "metadata": {}}}}
    row_id = store_event(event_id, payload["type"], payload["created"], payload, received_via="webhook")
    db.session.commit()
    return row_id


def test_a_failing_event_gets_its_own_job_with_backoff_and_the_drain_goes_on(app, monkeypatch):
    from portal.payments.services import store_event

    monkeypatch.setitem(app.config, "BILLING_RETRY_SECONDS", "30,120")
    failing = failing_payment("evt_fails")
    fine = store_event("evt_fine", "customer.updated", 1, {"id": "evt_fine", "type": "customer.updated"},
                       received_via="webhook")
    db.session.commit()

    assert tasks.process_received_events() == 2
    failed_row, fine_row = events()
    # The first attempt is on the row for the Webhook issues page, but it is not failed yet: retries remain.
    assert failed_row.status == EventStatus.RECEIVED and failed_row.attempts == 1
    assert "STRIPE_SECRET_KEY" in failed_row.error and "Traceback" in failed_row.traceback
    assert fine_row.id == fine and fine_row.status == EventStatus.IGNORED
    # Its retry waits in RQ's scheduled registry, with one retry left after it (two in all, as configured).
    queue = get_queue()
    (job_id,) = queue.scheduled_job_registry.get_job_ids()
    retry_job = queue.fetch_job(job_id)
    assert retry_job.func_name == PROCESS_EVENT and retry_job.args == (failing,) and retry_job.retries_left == 1
    # A later drain does not take it again: its own job owns it now.
    assert tasks.process_received_events() == 0


def test_the_drain_skips_an_event_another_worker_holds_and_stops_at_its_limit(app):
    from portal.payments.services import drain_received_events, store_event

    ids = [store_event(f"evt_{n}", "customer.updated", 1, {"id": f"evt_{n}", "type": "customer.updated"},
                       received_via="webhook") for n in range(3)]
    db.session.commit()
    held, release = threading.Event(), threading.Event()

    def hold_first():
        with app.app_context():
            db.session.scalars(db.select(WebhookEvent).where(WebhookEvent.id == ids[0]).with_for_update()).one()
            held.set()
            release.wait(10)
            db.session.rollback()
            db.session.remove()

    holder = threading.Thread(target=hold_first)
    holder.start()
    assert held.wait(10)
    try:
        assert drain_received_events(max_events=1) == (1, True)  # a full batch: more may wait
        assert drain_received_events() == (1, False)
    finally:
        release.set()
        holder.join()
    assert [e.status for e in events()] == [EventStatus.RECEIVED, EventStatus.IGNORED, EventStatus.IGNORED]
    assert process_event(ids[0]) == EventStatus.IGNORED


def test_the_receiver_shortcut_answers_as_the_view_does(app, client, monkeypatch):
    """Deliveries with a Content-Length are taken before Flask; the view behind it answers the same."""
    from werkzeug.test import Client

    from portal.payments.receiver import StripeWebhookShortcut

    monkeypatch.setitem(app.config, "STRIPE_WEBHOOK_SECRET", SECRET)
    shortcut = app.wsgi_app
    assert isinstance(shortcut, StripeWebhookShortcut)
    behind = Client(shortcut.wsgi_app)
    # Flask adds Vary: Cookie because its hooks looked at the session; Stripe's answer depends on no cookie.
    compared = {"Content-Length", "Vary"}
    for n, valid in enumerate((True, True, False)):  # new, duplicate, refused
        secret = SECRET if valid else "whsec_someone_else"
        taken_body, viewed_body = event_body(f"evt_taken_{n // 2}"), event_body(f"evt_viewed_{n // 2}")
        taken = deliver(client, taken_body, sign(taken_body, secret))
        viewed = deliver(behind, viewed_body, sign(viewed_body, secret))
        assert taken.status_code == viewed.status_code == (200 if valid else 400)
        assert taken.json == viewed.json
        assert ({k: v for k, v in taken.headers.items() if k not in compared}
                == {k: v for k, v in viewed.headers.items() if k not in compared})
    assert [e.stripe_event_id for e in events()] == ["evt_taken_0", "evt_viewed_0"]
