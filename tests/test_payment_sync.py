"""Payment sync end to end: sandbox → signed webhook → receiver over HTTP → real worker → job status."""
import pytest

from portal.audit.models import AuditEntry, Source
from portal.billing.models import BillingStatus
from portal.extensions import db
from portal.jobs.models import Job
from portal.payments.models import EventStatus, WebhookEvent
from tests import factories
from tests.fixtures.worker import deliver_concurrently

LINES = [("Labor", "2", 8500), ("Valve", "1", 1999)]
TOTAL = 2 * 8500 + 1999


def billed_job(stack, login, crew, **policy):
    client_row = factories.client(send_mode="auto", **policy)
    job = factories.job(client_row, crew=[crew], items=LINES)
    assert login(crew).post_form(f"/crew/jobs/{job.id}/complete").status_code == 303
    stack.wait_for(lambda: status_of(job.id) == BillingStatus.SENT, message="the bill to be sent")
    return job.id


def status_of(job_id):
    return db.session.get(Job, job_id).billing_status


def live_record(job_id):
    return db.session.get(Job, job_id).live_billing_record


def invoice_id_of(job_id):
    return live_record(job_id).stripe_invoice_id


def webhook_entries(job_id, action="billing.record_status"):
    return db.session.scalars(db.select(AuditEntry).where(AuditEntry.job_id == job_id, AuditEntry.action == action,
                                                          AuditEntry.source == Source.WEBHOOK)
                              .order_by(AuditEntry.id)).all()


def settle_all(stack):
    """Every delivery made and every stored event processed."""
    assert stack.sandbox.drain(timeout=15)

    def all_processed():
        return not db.session.scalar(db.select(db.func.count()).select_from(WebhookEvent)
                                     .where(WebhookEvent.status == EventStatus.RECEIVED))
    stack.wait_for(all_processed, message="every stored event to be processed")


def payment_intent_of_invoice(stack, invoice_id):
    payments = stack.sandbox.client().v1.invoice_payments.list(params={"invoice": invoice_id})
    return payments.data[0].payment.payment_intent


def test_a_card_payment_on_the_hosted_invoice_turns_the_job_paid(synced, login, crew):
    job_id = billed_job(synced, login, crew, billing_mode="invoice")
    synced.sandbox.control("POST", f"invoices/{invoice_id_of(job_id)}/pay", {"outcome": "card"})
    synced.wait_for(lambda: status_of(job_id) == BillingStatus.PAID, message="the job to be paid")
    billing_record = live_record(job_id)
    assert billing_record.amount_paid == TOTAL and billing_record.status == BillingStatus.PAID
    (entry,) = [e for e in webhook_entries(job_id) if e.new_value == "paid"]
    assert entry.actor_ref.startswith("evt_") and entry.actor_label == "Stripe event invoice.paid"
    assert len(webhook_entries(job_id, "payments.payment_confirmed")) == 1
    settle_all(synced)
    assert status_of(job_id) == BillingStatus.PAID


def test_an_invoice_bank_debit_is_processing_then_paid(synced, login, crew):
    job_id = billed_job(synced, login, crew, billing_mode="invoice")
    invoice_id = invoice_id_of(job_id)
    synced.sandbox.control("POST", f"invoices/{invoice_id}/pay", {"outcome": "bank_debit"})
    synced.wait_for(lambda: status_of(job_id) == BillingStatus.PROCESSING, message="processing")
    intent = payment_intent_of_invoice(synced, invoice_id)
    synced.sandbox.control("POST", f"payment_intents/{intent}/settle", {"outcome": "succeeded"})
    synced.wait_for(lambda: status_of(job_id) == BillingStatus.PAID, message="paid after settling")
    assert live_record(job_id).amount_paid == TOTAL


def test_an_invoice_bank_debit_that_fails_is_payment_failed(synced, login, crew):
    job_id = billed_job(synced, login, crew, billing_mode="invoice")
    invoice_id = invoice_id_of(job_id)
    synced.sandbox.control("POST", f"invoices/{invoice_id}/pay", {"outcome": "bank_debit"})
    synced.wait_for(lambda: status_of(job_id) == BillingStatus.PROCESSING, message="processing")
    intent = payment_intent_of_invoice(synced, invoice_id)
    synced.sandbox.control("POST", f"payment_intents/{intent}/settle", {"outcome": "failed"})
    synced.wait_for(lambda: status_of(job_id) == BillingStatus.PAYMENT_FAILED, message="payment failed")
    settle_all(synced)
    assert status_of(job_id) == BillingStatus.PAYMENT_FAILED and live_record(job_id).amount_paid == 0


def test_a_payment_link_bank_debit_is_processing_then_paid(synced, login, crew):
    job_id = billed_job(synced, login, crew, billing_mode="payment_link")
    link_id = live_record(job_id).stripe_payment_link_id
    session = synced.sandbox.control("POST", f"payment_links/{link_id}/pay", {"outcome": "bank_debit"})
    synced.wait_for(lambda: status_of(job_id) == BillingStatus.PROCESSING, message="processing")
    synced.sandbox.control("POST", f"payment_intents/{session['payment_intent']}/settle", {"outcome": "succeeded"})
    synced.wait_for(lambda: status_of(job_id) == BillingStatus.PAID, message="paid after settling")
    settle_all(synced)
    assert live_record(job_id).amount_paid == TOTAL
    assert len(webhook_entries(job_id, "payments.payment_confirmed")) == 1


def test_a_payment_link_bank_debit_that_fails_is_payment_failed(synced, login, crew):
    job_id = billed_job(synced, login, crew, billing_mode="payment_link")
    link_id = live_record(job_id).stripe_payment_link_id
    session = synced.sandbox.control("POST", f"payment_links/{link_id}/pay", {"outcome": "bank_debit"})
    synced.wait_for(lambda: status_of(job_id) == BillingStatus.PROCESSING, message="processing")
    synced.sandbox.control("POST", f"payment_intents/{session['payment_intent']}/settle", {"outcome": "failed"})
    synced.wait_for(lambda: status_of(job_id) == BillingStatus.PAYMENT_FAILED, message="payment failed")
    settle_all(synced)
    assert status_of(job_id) == BillingStatus.PAYMENT_FAILED
    assert webhook_entries(job_id, "payments.payment_confirmed") == []


def test_refunds_partial_then_full_and_a_dispute(synced, login, crew):
    job_id = billed_job(synced, login, crew, billing_mode="payment_link")
    link_id = live_record(job_id).stripe_payment_link_id
    session = synced.sandbox.control("POST", f"payment_links/{link_id}/pay", {"outcome": "card"})
    synced.wait_for(lambda: status_of(job_id) == BillingStatus.PAID, message="paid")
    stripe_client = synced.sandbox.client()
    charge = stripe_client.v1.payment_intents.retrieve(session["payment_intent"]).latest_charge
    stripe_client.v1.refunds.create(params={"charge": charge, "amount": 1000})
    synced.wait_for(lambda: status_of(job_id) == BillingStatus.PARTIALLY_REFUNDED, message="partially refunded")
    assert live_record(job_id).amount_refunded == 1000
    stripe_client.v1.refunds.create(params={"charge": charge})
    synced.wait_for(lambda: status_of(job_id) == BillingStatus.REFUNDED, message="refunded")
    assert live_record(job_id).amount_refunded == TOTAL


def test_a_refund_of_a_batch_invoice_is_spread_over_its_jobs(synced, login, crew):
    from datetime import timedelta

    from portal.audit.services import Actor
    from portal.billing.services import run_batches
    from portal.timeutil import utcnow

    client_row = factories.client(send_mode="auto", billing_mode="invoice", batching="weekly")
    small, large = (factories.job(client_row, crew=[crew], items=[("Labor", "1", amount)]) for amount in (10000, 30000))
    for job in (small, large):
        assert login(crew).post_form(f"/crew/jobs/{job.id}/complete").status_code == 303
    synced.wait_for(lambda: {status_of(small.id), status_of(large.id)} == {BillingStatus.READY_TO_BILL},
                    message="both waiting for the batch")
    run_batches(by=Actor.system("tests"), now=utcnow() + timedelta(days=7))
    synced.wait_for(lambda: {status_of(small.id), status_of(large.id)} == {BillingStatus.SENT}, message="one invoice")
    invoice_id = invoice_id_of(small.id)
    assert invoice_id_of(large.id) == invoice_id
    synced.sandbox.control("POST", f"invoices/{invoice_id}/pay", {"outcome": "card"})
    synced.wait_for(lambda: status_of(small.id) == status_of(large.id) == BillingStatus.PAID, message="paid")
    stripe_client = synced.sandbox.client()
    charge = stripe_client.v1.payment_intents.retrieve(payment_intent_of_invoice(synced, invoice_id)).latest_charge

    def refunds():
        settle_all(synced)
        db.session.expire_all()
        return [(live_record(job.id).amount_refunded, status_of(job.id)) for job in (small, large)]

    stripe_client.v1.refunds.create(params={"charge": charge, "amount": 1})  # a quarter and three quarters of a cent
    assert refunds() == [(0, BillingStatus.PAID), (1, BillingStatus.PARTIALLY_REFUNDED)]
    stripe_client.v1.refunds.create(params={"charge": charge, "amount": 9999})  # a quarter of the invoice in all
    assert refunds() == [(2500, BillingStatus.PARTIALLY_REFUNDED), (7500, BillingStatus.PARTIALLY_REFUNDED)]
    stripe_client.v1.refunds.create(params={"charge": charge})
    assert refunds() == [(10000, BillingStatus.REFUNDED), (30000, BillingStatus.REFUNDED)]


def test_a_dispute_marks_the_job_disputed(synced, login, crew):
    job_id = billed_job(synced, login, crew, billing_mode="invoice")
    invoice_id = invoice_id_of(job_id)
    synced.sandbox.control("POST", f"invoices/{invoice_id}/pay", {"outcome": "card"})
    synced.wait_for(lambda: status_of(job_id) == BillingStatus.PAID, message="paid")
    intent = synced.sandbox.client().v1.payment_intents.retrieve(payment_intent_of_invoice(synced, invoice_id))
    synced.sandbox.control("POST", f"charges/{intent.latest_charge}/dispute", {"reason": "fraudulent"})
    synced.wait_for(lambda: status_of(job_id) == BillingStatus.DISPUTED, message="disputed")


@pytest.mark.parametrize("outcome, final", [("won", BillingStatus.PAID), ("lost", BillingStatus.DISPUTED)])
def test_a_dispute_decided_before_its_opening_arrives_keeps_the_decision(synced, login, crew, outcome, final):
    job_id = billed_job(synced, login, crew, billing_mode="invoice")
    invoice_id = invoice_id_of(job_id)
    synced.sandbox.control("POST", f"invoices/{invoice_id}/pay", {"outcome": "card"})
    synced.wait_for(lambda: status_of(job_id) == BillingStatus.PAID, message="paid")
    synced.sandbox.control("POST", f"webhook_endpoints/{synced.endpoint_id}/chaos",
                           {"drop_types": ["charge.dispute.created"]})
    intent = synced.sandbox.client().v1.payment_intents.retrieve(payment_intent_of_invoice(synced, invoice_id))
    dispute = synced.sandbox.control("POST", f"charges/{intent.latest_charge}/dispute", {"reason": "fraudulent"})
    synced.sandbox.control("POST", f"disputes/{dispute['id']}/close", {"outcome": outcome})
    settle_all(synced)
    assert status_of(job_id) == final

    events = synced.sandbox.control("GET", "objects/event")["data"]
    (opened,) = [e for e in events if e["type"] == "charge.dispute.created"]
    (decided,) = [e for e in events if e["type"] == "charge.dispute.closed"]
    assert deliver_concurrently(synced, opened, copies=1) == [200]
    assert deliver_concurrently(synced, decided, copies=1) == [200]  # a redelivery: already stored, nothing new
    settle_all(synced)
    assert status_of(job_id) == final
    ignored = webhook_entries(job_id, "payments.event_ignored")
    assert [entry.detail["reason"] for entry in ignored] == ["dispute already decided"]
    assert len(webhook_entries(job_id, f"billing.dispute_{outcome}")) == 1


def test_twenty_concurrent_deliveries_of_one_event_make_one_transition(synced, login, crew):
    job_id = billed_job(synced, login, crew, billing_mode="invoice")
    synced.sandbox.control("POST", f"webhook_endpoints/{synced.endpoint_id}/chaos", {"drop_types": ["invoice.paid"]})
    synced.sandbox.control("POST", f"invoices/{invoice_id_of(job_id)}/pay", {"outcome": "card"})
    settle_all(synced)
    assert status_of(job_id) == BillingStatus.SENT  # the paid event was dropped
    (paid,) = [e for e in synced.sandbox.control("GET", "objects/event")["data"] if e["type"] == "invoice.paid"]
    assert deliver_concurrently(synced, paid, copies=20) == [200] * 20
    synced.wait_for(lambda: status_of(job_id) == BillingStatus.PAID, message="paid")
    settle_all(synced)
    assert db.session.scalar(db.select(db.func.count()).select_from(WebhookEvent)
                             .where(WebhookEvent.stripe_event_id == paid["id"])) == 1
    assert [e.new_value for e in webhook_entries(job_id)].count("paid") == 1
    assert len(webhook_entries(job_id, "billing.status_changed")) == 1
    assert len(webhook_entries(job_id, "payments.payment_confirmed")) == 1


def test_shuffled_and_duplicated_deliveries_end_correct(synced, login, crew):
    synced.sandbox.control("POST", f"webhook_endpoints/{synced.endpoint_id}/chaos",
                           {"duplicate": 3, "shuffle_window": 4})
    job_id = billed_job(synced, login, crew, billing_mode="payment_link")
    link_id = live_record(job_id).stripe_payment_link_id
    session = synced.sandbox.control("POST", f"payment_links/{link_id}/pay", {"outcome": "bank_debit"})
    synced.sandbox.control("POST", f"payment_intents/{session['payment_intent']}/settle", {"outcome": "succeeded"})
    stripe_client = synced.sandbox.client()
    charge = stripe_client.v1.payment_intents.retrieve(session["payment_intent"]).latest_charge
    stripe_client.v1.refunds.create(params={"charge": charge, "amount": 500})
    settle_all(synced)
    billing_record = live_record(job_id)
    assert billing_record.status == BillingStatus.PARTIALLY_REFUNDED
    assert billing_record.amount_paid == TOTAL and billing_record.amount_refunded == 500
    assert len(webhook_entries(job_id, "payments.payment_confirmed")) == 1
