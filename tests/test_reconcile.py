"""Reconciliation and `flask stripe …`: missed events recovered, drift repaired, setup idempotent."""
from portal.audit.models import AuditEntry, Source
from portal.billing.models import BillingStatus
from portal.extensions import db
from portal.payments.handlers import HANDLED_EVENTS
from portal.payments.models import WebhookEvent
from tests.test_payment_sync import synced  # noqa: F401  (fixture)
from tests.test_payment_sync import TOTAL, billed_job, invoice_id_of, live_record, settle_all, status_of


def reconcile_entries(job_id):
    return db.session.scalars(db.select(AuditEntry).where(AuditEntry.job_id == job_id,
                                                          AuditEntry.source == Source.RECONCILE,
                                                          AuditEntry.action == "billing.record_status")).all()


def test_reconcile_recovers_an_invoice_paid_the_sandbox_dropped(synced, login, crew, app):
    job_id = billed_job(synced, login, crew, billing_mode="invoice")
    synced.sandbox.control("POST", f"webhook_endpoints/{synced.endpoint_id}/chaos", {"drop_types": ["invoice.paid"]})
    synced.sandbox.control("POST", f"invoices/{invoice_id_of(job_id)}/pay", {"outcome": "card"})
    settle_all(synced)
    assert status_of(job_id) == BillingStatus.SENT

    result = app.test_cli_runner().invoke(args=["stripe", "reconcile"])
    assert result.exit_code == 0, result.output
    assert "invoice.paid" in result.output and "1 missed event(s) processed" in result.output
    db.session.expire_all()
    assert status_of(job_id) == BillingStatus.PAID and live_record(job_id).amount_paid == TOTAL
    (entry,) = reconcile_entries(job_id)
    assert entry.new_value == "paid" and entry.actor_ref.startswith("evt_")
    again = app.test_cli_runner().invoke(args=["stripe", "reconcile"])
    assert "0 missed event(s) processed, 0 bill(s) repaired." in again.output


def test_reconcile_repairs_an_open_link_whose_events_all_went_missing(synced, login, crew, app):
    job_id = billed_job(synced, login, crew, billing_mode="payment_link")
    synced.sandbox.control("POST", f"webhook_endpoints/{synced.endpoint_id}/chaos", {"drop": True})
    synced.sandbox.control("POST", f"payment_links/{live_record(job_id).stripe_payment_link_id}/pay",
                           {"outcome": "card"})
    settle_all(synced)
    assert status_of(job_id) == BillingStatus.SENT
    # Events older than Stripe's 30-day window are out of reach: the open-items pass must repair it alone.
    db.session.execute(db.delete(WebhookEvent))
    from portal.payments.services import sync_state

    sync_state().events_watermark = 2**40
    db.session.commit()
    synced.sandbox.control("DELETE", f"webhook_endpoints/{synced.endpoint_id}/chaos")
    import portal.billing.stripe_gateway as gateway

    original = gateway.list_events
    gateway.list_events = lambda **kwargs: iter(())  # nothing within reach of the events API
    try:
        result = app.test_cli_runner().invoke(args=["stripe", "reconcile"])
    finally:
        gateway.list_events = original
    assert result.exit_code == 0, result.output
    assert "sent → paid" in result.output and "1 bill(s) repaired" in result.output
    db.session.expire_all()
    assert status_of(job_id) == BillingStatus.PAID and live_record(job_id).amount_paid == TOTAL
    (entry,) = reconcile_entries(job_id)
    assert entry.actor_ref == "reconcile"


def test_stripe_setup_registers_the_handled_events_once(synced, app):
    url = "https://closeout.example.com/webhooks/stripe"
    runner = app.test_cli_runner()
    first = runner.invoke(args=["stripe", "setup", "--url", url])
    assert first.exit_code == 0, first.output
    assert "STRIPE_WEBHOOK_SECRET=whsec_" in first.output
    second = runner.invoke(args=["stripe", "setup", "--url", url])
    assert "Already registered" in second.output and "whsec_" not in second.output
    endpoints = [e for e in synced.sandbox.client().v1.webhook_endpoints.list().data if e.url == url]
    assert len(endpoints) == 1 and sorted(endpoints[0].enabled_events) == sorted(HANDLED_EVENTS)


def test_stripe_replay_failed_sends_failed_events_back(synced, app):
    from portal.payments.models import EventStatus
    from portal.payments.services import store_event

    row_id = store_event("evt_broken", "invoice.paid", 1, {"id": "evt_broken", "type": "invoice.paid", "created": 1,
                                                           "data": {"object": {"id": "in_x", "metadata": {}}}},
                         received_via="webhook")
    db.session.get(WebhookEvent, row_id).status = EventStatus.FAILED
    db.session.commit()
    result = app.test_cli_runner().invoke(args=["stripe", "replay", "--failed"])
    assert "retrying evt_broken (invoice.paid)" in result.output and "1 failed event(s)" in result.output
    synced.wait_for(lambda: db.session.get(WebhookEvent, row_id).status == EventStatus.IGNORED,
                    message="the replayed event to be processed")
