"""Reconciliation and `flask stripe …`: missed events recovered, drift repaired, setup idempotent."""
import re

from portal.audit.models import AuditEntry, Source
from portal.billing.models import BillingStatus
from portal.extensions import db
from portal.payments.handlers import HANDLED_EVENTS
from portal.payments.models import WebhookEvent
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
    assert "0 missed event(s) processed, 0 bill(s) repaired, 0 partner account(s) updated." in again.output


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


def test_stripe_setup_registers_an_account_and_a_connect_endpoint_once(synced, app):
    from portal.payments.handlers import ACCOUNT_EVENTS, CONNECT_EVENTS

    url = "https://closeout.example.com/webhooks/stripe"
    runner = app.test_cli_runner()
    first = runner.invoke(args=["stripe", "setup", "--url", url])
    assert first.exit_code == 0, first.output
    assert re.search(r"STRIPE_WEBHOOK_SECRET=whsec_\w+,whsec_\w+", first.output)
    second = runner.invoke(args=["stripe", "setup", "--url", url])
    assert second.output.count("Already registered") == 2 and "whsec_" not in second.output
    endpoints = {e.metadata["closeout_endpoint"]: e for e in synced.sandbox.client().v1.webhook_endpoints.list().data
                 if e.url == url}
    assert sorted(endpoints["account"].enabled_events) == sorted(ACCOUNT_EVENTS)
    assert sorted(endpoints["connect"].enabled_events) == sorted(CONNECT_EVENTS) == ["account.updated"]


def test_stripe_setup_splits_an_endpoint_registered_before_connect(synced, app):
    from portal.payments.handlers import ACCOUNT_EVENTS

    url = "https://closeout.example.com/webhooks/stripe"
    old = synced.sandbox.client().v1.webhook_endpoints.create(params={"url": url,
                                                                      "enabled_events": list(HANDLED_EVENTS)})
    result = app.test_cli_runner().invoke(args=["stripe", "setup", "--url", url])
    assert f"Updated the account endpoint {old.id}" in result.output
    assert "Registered the connect endpoint" in result.output and "Add this secret" in result.output
    refreshed = synced.sandbox.client().v1.webhook_endpoints.retrieve(old.id)
    assert sorted(refreshed.enabled_events) == sorted(ACCOUNT_EVENTS)


def test_reconcile_reads_partner_accounts_whose_connect_event_was_missed(synced, app):
    from portal.audit.services import Actor
    from portal.referrals.models import AccountStatus, Partner
    from portal.referrals.settlement import start_onboarding
    from tests.fixtures.referrals import partner_row

    synced.sandbox.control("POST", f"webhook_endpoints/{synced.connect_endpoint_id}/chaos", {"drop": True})
    partner = partner_row(name="Quiet Partner")
    start_onboarding(partner, by=Actor.system("tests"))
    db.session.commit()
    synced.sandbox.control("POST", f"accounts/{partner.stripe_account_id}/onboard")  # Connect event: not delivered
    settle = synced.sandbox.drain(timeout=15)
    assert settle and db.session.get(Partner, partner.id).account_status != AccountStatus.READY

    result = app.test_cli_runner().invoke(args=["stripe", "reconcile"])
    assert "partner Quiet Partner: payouts account onboarding → ready" in result.output, result.output
    db.session.expire_all()
    assert db.session.get(Partner, partner.id).account_status == AccountStatus.READY


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
