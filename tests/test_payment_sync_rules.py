"""Processing rules without Stripe: precedence, ordering, concurrency, failures people can see."""
import threading
import time

import pytest

from portal.audit.models import AuditEntry
from portal.billing.models import BillingRecord, BillingStatus
from portal.extensions import db
from portal.jobs.models import Job
from portal.payments import tasks
from portal.payments.models import EventStatus, StripeSyncState, WebhookEvent
from portal.payments.services import process_event, store_event, sweep_overdue
from portal.timeutil import utcnow
from tests.fixtures.billing import billed_record

INVOICE = "in_rules_1"
T0 = int(time.time()) - 3600


@pytest.fixture
def sent(db):
    billed = billed_record()
    billed.record.stripe_invoice_id = INVOICE
    db.session.commit()
    return billed.record.id


def event(n, event_type, created, obj=None):
    obj = obj or {"id": INVOICE, "object": "invoice", "metadata": {}, "amount_paid": 17000, "status": "paid"}
    payload = {"id": f"evt_{n}", "type": event_type, "created": created, "data": {"object": obj}}
    row_id = store_event(payload["id"], event_type, created, payload, received_via="webhook")
    db.session.commit()
    return row_id


def run(*events):
    for row_id in events:
        process_event(row_id)
    db.session.expire_all()


def record_(record_id):
    return db.session.get(BillingRecord, record_id)


def status_changes(record_id):
    return db.session.scalars(db.select(AuditEntry).where(AuditEntry.entity_type == "billing_record",
                                                          AuditEntry.entity_id == record_id,
                                                          AuditEntry.action == "billing.record_status")
                              .order_by(AuditEntry.id)).all()


def ignored(record_id):
    return db.session.scalars(db.select(AuditEntry).where(AuditEntry.entity_id == record_id,
                                                          AuditEntry.action == "payments.event_ignored")).all()


def test_a_late_payment_failed_after_paid_changes_nothing_and_is_logged_ignored(sent):
    run(event(1, "invoice.paid", T0), event(2, "invoice.payment_failed", T0 + 5))
    billing_record = record_(sent)
    assert billing_record.status == BillingStatus.PAID and billing_record.job.billing_status == BillingStatus.PAID
    assert billing_record.amount_paid == 17000
    (entry,) = ignored(sent)
    assert entry.actor_ref == "evt_2" and entry.new_value == "payment_failed"


def test_paid_arriving_before_finalized_ends_paid(sent):
    run(event(1, "invoice.paid", T0 + 5), event(2, "invoice.finalized", T0), event(3, "invoice.sent", T0 + 1))
    assert record_(sent).status == BillingStatus.PAID
    assert [e.new_value for e in status_changes(sent)] == ["paid"]


def test_among_equals_the_newer_event_wins(sent):
    run(event(1, "payment_intent.processing", T0 + 10,
              {"id": "pi_1", "object": "payment_intent", "metadata": {"closeout_record_id": str(sent)}}),
        event(2, "invoice.payment_failed", T0 + 5))  # older: ignored
    assert record_(sent).status == BillingStatus.PROCESSING
    run(event(3, "invoice.overdue", T0 + 20), event(4, "invoice.payment_failed", T0 + 30))
    assert record_(sent).status == BillingStatus.PAYMENT_FAILED  # an overdue record with a new failure stays collectable
    assert [e.new_value for e in status_changes(sent)] == ["processing", "overdue", "payment_failed"]


def test_void_ends_a_record_and_uncollectible_can_still_be_paid(db, sent):
    run(event(1, "invoice.marked_uncollectible", T0), event(2, "invoice.paid", T0 + 5))
    assert record_(sent).status == BillingStatus.PAID
    other = billed_record()
    other.record.stripe_invoice_id = "in_rules_2"
    db.session.commit()
    voided = {"id": "in_rules_2", "object": "invoice", "metadata": {}}
    run(event(3, "invoice.voided", T0, voided), event(4, "invoice.paid", T0 + 5, voided))
    closed = record_(other.record.id)
    assert closed.status == BillingStatus.VOID and not closed.live
    assert db.session.get(Job, closed.job_id).billing_status == BillingStatus.NOT_BILLED


def test_the_overdue_sweep_marks_unpaid_bills_past_due(db, sent):
    billing_record = record_(sent)
    billing_record.due_at = utcnow().replace(year=2020)
    db.session.commit()
    assert [r.id for r in sweep_overdue()] == [sent]
    assert record_(sent).status == BillingStatus.OVERDUE
    assert record_(sent).job.billing_status == BillingStatus.OVERDUE
    assert sweep_overdue() == []


def test_two_different_events_for_one_job_at_the_same_moment_end_paid(app, sent):
    rows = [event(1, "invoice.payment_failed", T0 + 10), event(2, "invoice.paid", T0)]
    barrier = threading.Barrier(2)
    errors = []

    def process(row_id):
        with app.app_context():
            try:
                barrier.wait()
                process_event(row_id)
            except Exception as error:  # surfaced by the assertion below
                errors.append(error)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=process, args=(row_id,)) for row_id in rows]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    db.session.expire_all()
    assert record_(sent).status == BillingStatus.PAID
    assert record_(sent).job.billing_status == BillingStatus.PAID
    assert [e.new_value for e in status_changes(sent)].count("paid") == 1
    assert {e.status for e in db.session.scalars(db.select(WebhookEvent))} == {EventStatus.PROCESSED}


def test_an_event_processed_twice_changes_things_once(sent):
    row_id = event(1, "invoice.paid", T0)
    run(row_id, row_id)
    assert len(status_changes(sent)) == 1
    assert db.session.get(WebhookEvent, row_id).attempts == 1


@pytest.fixture
def mail(app, smtp_server):
    saved = {key: app.config[key] for key in ("SMTP_HOST", "SMTP_PORT", "ALERT_EMAIL")}
    app.config.update(SMTP_HOST=smtp_server.host, SMTP_PORT=smtp_server.port, ALERT_EMAIL="owner@closeout.test")
    yield smtp_server
    app.config.update(saved)


def failing_event(n):
    """A payment without our metadata needs Stripe to find its invoice, and Stripe is not configured here."""
    return event(n, "payment_intent.processing", T0, {"id": f"pi_{n}", "object": "payment_intent", "metadata": {}})


def test_a_failure_is_kept_with_its_traceback_and_the_owner_is_alerted_once(app, sent, mail):
    for n in (1, 2):
        with pytest.raises(Exception, match="STRIPE_SECRET_KEY"):
            tasks.process_webhook_event(failing_event(n))
    db.session.expire_all()
    failed = db.session.scalars(db.select(WebhookEvent).order_by(WebhookEvent.id)).all()
    assert [e.status for e in failed] == [EventStatus.FAILED, EventStatus.FAILED]
    assert "STRIPE_SECRET_KEY" in failed[0].error and "Traceback" in failed[0].traceback
    (alert,) = mail.messages
    assert alert["To"] == "owner@closeout.test" and "Stripe events are failing" in alert["Subject"]


def test_the_issues_page_lists_failures_and_retry_and_ignore_work(app, login, office, crew, sent, mail):
    first, second = failing_event(1), failing_event(2)
    for row_id in (first, second):
        with pytest.raises(Exception):
            tasks.process_webhook_event(row_id)
    browser = login(office)
    page = browser.get("/webhooks/issues").get_data(as_text=True)
    assert "payment_intent.processing" in page and "evt_1" in page and "evt_2" in page
    assert "Last event received" in page
    response = browser.htmx("POST", f"/webhooks/issues/{first}/ignore")
    assert response.status_code == 200 and "Ignored" in response.get_data(as_text=True)
    response = browser.post_form(f"/webhooks/issues/{second}/retry")
    assert response.status_code == 302
    db.session.expire_all()
    assert db.session.get(WebhookEvent, first).status == EventStatus.IGNORED
    assert db.session.get(WebhookEvent, second).status == EventStatus.RECEIVED
    assert db.session.get(StripeSyncState, 1).failure_alert_sent_at is None  # the next outbreak alerts again
    page = browser.get("/webhooks/issues").get_data(as_text=True)
    assert "No failed events" in page
    assert login(crew).get("/webhooks/issues").status_code == 404


def test_the_page_warns_when_stripe_has_been_silent_while_bills_are_open(app, login, owner, sent):
    app.config["WEBHOOK_SILENCE_WARNING_HOURS"] = 24
    page = login(owner).get("/webhooks/issues").get_data(as_text=True)
    assert "No Stripe event has arrived for over 24 hours while 1 bill(s) are open" in page
    event(1, "invoice.sent", T0)
    page = login(owner).get("/webhooks/issues").get_data(as_text=True)
    assert "No Stripe event has arrived" not in page
