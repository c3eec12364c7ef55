"""Settlement end to end (issue 6): sandbox → signed webhook → real worker → payout row → Stripe Transfer.

The end-to-end tests check the sandbox's own transfers and reversals, not just our rows.
"""
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from portal.audit.models import AuditEntry
from portal.audit.services import Actor
from portal.billing.models import BillingStatus
from portal.extensions import db
from portal.jobs.models import Job
from portal.payments.models import EventStatus, WebhookEvent
from portal.referrals.models import (AccountStatus, DisputePolicy, EntryKind, Partner, Payout, PayoutEntry,
                                     PayoutStatus)
from portal.referrals.settlement import (on_refund, release_due_payouts, retry_payout, settle_referral_fee,
                                         start_onboarding)
from portal.timeutil import utcnow
from tests import factories
from tests.fixtures.billing import billed_record
from tests.fixtures.referrals import partner_row, ready_partner, referral_row
from tests.fixtures.stripe_sandbox import no_redirect_post
from tests.fixtures.worker import deliver_concurrently

LINES = [("Labor", "2", 8500), ("Valve", "1", 1999)]
TOTAL = 2 * 8500 + 1999  # no sales tax in tests: subtotal = total = 18999
FEE = 1900  # 10 % of 18999 = 1899.9, half up
OFFICE = Actor.system("tests")


def billed_job(stack, login, crew, partner, billing_mode="invoice"):
    """A referred client's job, completed by the crew and billed by the worker; returns its id."""
    client_row = factories.client(send_mode="auto", billing_mode=billing_mode)
    referral_row(partner, client=client_row)
    job = factories.job(client_row, crew=[crew], items=LINES)
    assert login(crew).post_form(f"/crew/jobs/{job.id}/complete").status_code == 303
    stack.wait_for(lambda: db.session.get(Job, job.id).billing_status == BillingStatus.SENT, message="the bill sent")
    return job.id


def live_record(job_id):
    return db.session.get(Job, job_id).live_billing_record


def pay(stack, job_id):
    """The customer pays by card (hosted invoice or payment link); returns the charge's id."""
    billing_record = live_record(job_id)
    stripe_client = stack.sandbox.client()
    if billing_record.stripe_invoice_id:
        stack.sandbox.control("POST", f"invoices/{billing_record.stripe_invoice_id}/pay", {"outcome": "card"})
        payment = stripe_client.v1.invoice_payments.list(params={"invoice": billing_record.stripe_invoice_id}).data[0]
        intent_id = payment.payment.payment_intent
    else:
        session = stack.sandbox.control("POST", f"payment_links/{billing_record.stripe_payment_link_id}/pay",
                                        {"outcome": "card"})
        intent_id = session["payment_intent"]
    return stripe_client.v1.payment_intents.retrieve(intent_id).latest_charge


def payout_of(job_id):
    return db.session.scalar(select(Payout).where(Payout.job_id == job_id))


def status_is(job_id, status):
    return lambda: (payout := payout_of(job_id)) is not None and payout.status == status


def transfers(stack):
    return stack.sandbox.client().v1.transfers.list(params={"limit": 100}).data


def reversal_amounts(stack, transfer_id):
    return sorted(r.amount for r in stack.sandbox.client().v1.transfers.reversals.list(transfer_id).data)


def entries(payout, kind):
    return db.session.scalars(select(PayoutEntry).where(PayoutEntry.payout_id == payout.id, PayoutEntry.kind == kind)
                              .order_by(PayoutEntry.id)).all()


def settle_all(stack):
    assert stack.sandbox.drain(timeout=15)
    stack.wait_for(lambda: not db.session.scalar(select(db.func.count()).select_from(WebhookEvent)
                                                 .where(WebhookEvent.status == EventStatus.RECEIVED)),
                   message="every stored event processed")


def test_a_paid_invoice_makes_exactly_one_transfer_even_with_ten_concurrent_deliveries(synced, login, crew):
    partner = ready_partner(synced.sandbox)
    job_id = billed_job(synced, login, crew, partner)
    synced.sandbox.control("POST", f"webhook_endpoints/{synced.endpoint_id}/chaos", {"drop_types": ["invoice.paid"]})
    charge_id = pay(synced, job_id)
    settle_all(synced)
    assert payout_of(job_id) is None  # the paid event was dropped: nothing settled yet
    (paid,) = [e for e in synced.sandbox.control("GET", "objects/event")["data"] if e["type"] == "invoice.paid"]
    assert deliver_concurrently(synced, paid, copies=10) == [200] * 10
    synced.wait_for(status_is(job_id, PayoutStatus.PAID), message="the payout transferred")
    settle_all(synced)

    (transfer,) = transfers(synced)
    assert (transfer.amount, transfer.currency, transfer.destination) == (FEE, "usd", partner.stripe_account_id)
    assert transfer.source_transaction == charge_id and transfer.transfer_group == f"job-{job_id}"
    payout = payout_of(job_id)
    assert transfer.metadata.to_dict() == {"payout_id": str(payout.id), "job_id": str(job_id),
                                           "partner_id": str(partner.id)}
    assert (payout.stripe_transfer_id, payout.source_charge_id, payout.amount_paid, payout.amount) == (
        transfer.id, charge_id, TOTAL, FEE)
    assert [e.kind for e in payout.entries] == [EntryKind.ACCRUED, EntryKind.TRANSFERRED]
    actions = db.session.scalars(select(AuditEntry.action).where(AuditEntry.job_id == job_id,
                                                                 AuditEntry.action.like("referrals.%"))).all()
    assert actions == ["referrals.fee_accrued", "referrals.payout_transferred"]
    assert db.session.scalar(select(db.func.count()).select_from(Payout)) == 1


def test_a_payment_link_payment_transfers_from_its_charge(synced, login, crew):
    partner = ready_partner(synced.sandbox, basis_points=250)
    job_id = billed_job(synced, login, crew, partner, billing_mode="payment_link")
    charge_id = pay(synced, job_id)
    synced.wait_for(status_is(job_id, PayoutStatus.PAID), message="the payout transferred")
    (transfer,) = transfers(synced)
    assert (transfer.amount, transfer.source_transaction) == (475, charge_id)  # 2.5 % of 18999 = 474.975


def test_ten_concurrent_settlements_of_one_payment_make_one_payout_row(app):
    """The unique (job, partner) row decides, whatever the event ids and the timing."""
    client_row = factories.client()
    partner = partner_row()
    referral_row(partner, client=client_row)
    billed = billed_record(client_row, status=BillingStatus.PAID)
    record_id = billed.record.id
    billed.record.amount_paid = billed.record.total
    db.session.commit()
    barrier, errors = threading.Barrier(10), []

    def settle(n):
        with app.app_context():
            try:
                from portal.billing.models import BillingRecord

                billing_record = db.session.get(BillingRecord, record_id)
                barrier.wait()
                settle_referral_fee(billing_record, event_id=f"evt_concurrent_{n}")
                db.session.commit()
            except Exception as error:  # reported to the test below
                errors.append(error)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=settle, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert errors == []
    (payout,) = db.session.scalars(select(Payout)).all()
    assert payout.status == PayoutStatus.HELD_NO_ACCOUNT and payout.amount == 1700  # 10 % of 2 × 85.00
    assert len(entries(payout, EntryKind.ACCRUED)) == 1


def test_transfer_failures_are_retried_with_backoff_then_succeed(synced, login, crew):
    partner = ready_partner(synced.sandbox)
    job_id = billed_job(synced, login, crew, partner)
    synced.sandbox.control("POST", "faults", {"method": "POST", "path": "/v1/transfers", "mode": "500", "count": 2})
    pay(synced, job_id)
    synced.wait_for(status_is(job_id, PayoutStatus.PAID), message="the payout transferred after retries")
    payout = payout_of(job_id)
    assert payout.attempts == 3 and payout.last_error is None
    assert [e.ref for e in entries(payout, EntryKind.TRANSFER_FAILED)] == ["attempt-1", "attempt-2"]
    assert [t.id for t in transfers(synced)] == [payout.stripe_transfer_id]


def test_balance_insufficient_is_retried_until_funds_arrive(synced, login, crew):
    """Paid out of band there is no charge to fund the transfer: it waits on the platform balance."""
    partner = ready_partner(synced.sandbox)
    job_id = billed_job(synced, login, crew, partner)
    synced.sandbox.client().v1.invoices.pay(live_record(job_id).stripe_invoice_id, params={"paid_out_of_band": True})
    synced.wait_for(lambda: (p := payout_of(job_id)) is not None and entries(p, EntryKind.TRANSFER_FAILED),
                    message="a failed attempt")
    assert "balance insufficient" in payout_of(job_id).last_error
    synced.sandbox.control("POST", "balance", {"currency": "usd", "available": 100000})
    synced.wait_for(status_is(job_id, PayoutStatus.PAID), message="the payout transferred once funded")
    (transfer,) = transfers(synced)
    assert transfer.amount == FEE and transfer.source_transaction is None


def test_a_transfer_that_timed_out_but_happened_is_not_made_twice(synced, login, crew):
    """The SDK gives up after 3 s while Stripe still makes the transfer: the retry's key replays it."""
    partner = ready_partner(synced.sandbox)
    job_id = billed_job(synced, login, crew, partner)
    synced.sandbox.control("POST", "faults", {"method": "POST", "path": "/v1/transfers", "mode": "hang",
                                              "hang_seconds": 5, "count": 1})
    pay(synced, job_id)
    synced.wait_for(status_is(job_id, PayoutStatus.PAID), message="the payout transferred after a timeout")
    payout = payout_of(job_id)
    assert payout.attempts >= 2 and "Stripe unreachable" in entries(payout, EntryKind.TRANSFER_FAILED)[0].detail["error"]
    time.sleep(3)  # let the held request finish at the sandbox
    assert [t.id for t in transfers(synced)] == [payout.stripe_transfer_id]


def test_a_partial_refund_before_the_transfer_sends_a_smaller_fee(synced, login, crew):
    partner = ready_partner(synced.sandbox, hold_days=1)
    job_id = billed_job(synced, login, crew, partner)
    charge_id = pay(synced, job_id)
    synced.wait_for(status_is(job_id, PayoutStatus.HELD), message="held")
    synced.sandbox.client().v1.refunds.create(params={"charge": charge_id, "amount": 9500})
    synced.wait_for(lambda: payout_of(job_id).amount_reversed == 950, message="the fee reduced")  # 950.05 → 950
    assert payout_of(job_id).status == PayoutStatus.HELD
    release_due_payouts(now=utcnow() + timedelta(days=2))
    synced.wait_for(status_is(job_id, PayoutStatus.PAID), message="the smaller fee transferred")
    (transfer,) = transfers(synced)
    assert transfer.amount == FEE - 950


def test_after_the_last_attempt_the_payout_fails_and_retry_makes_one_transfer(synced, login, crew):
    partner = ready_partner(synced.sandbox)
    job_id = billed_job(synced, login, crew, partner)
    synced.sandbox.control("POST", "faults", {"method": "POST", "path": "/v1/transfers", "mode": "500", "count": 50})
    pay(synced, job_id)
    synced.wait_for(status_is(job_id, PayoutStatus.FAILED), message="the payout failed", timeout=40)
    payout = payout_of(job_id)
    assert payout.attempts == 4 and "500" in payout.last_error  # BILLING_RETRY_SECONDS=1,1,2: four attempts
    assert transfers(synced) == []
    synced.sandbox.control("DELETE", "faults")

    retry_payout(payout, by=OFFICE)
    db.session.commit()
    synced.wait_for(status_is(job_id, PayoutStatus.PAID), message="the retried payout transferred")
    with pytest.raises(Exception, match="Only a failed payout"):
        retry_payout(payout_of(job_id), by=OFFICE)
    db.session.rollback()
    assert [t.id for t in transfers(synced)] == [payout_of(job_id).stripe_transfer_id]


def test_a_transfer_stripe_made_but_we_never_saved_is_found_not_repeated(synced, login, crew):
    """A timeout after Stripe created the transfer (or a crash): the retry finds it by group and metadata."""
    partner = ready_partner(synced.sandbox)
    job_id = billed_job(synced, login, crew, partner)
    synced.sandbox.control("POST", "faults", {"method": "POST", "path": "/v1/transfers", "mode": "500", "count": 50})
    charge_id = pay(synced, job_id)
    synced.wait_for(status_is(job_id, PayoutStatus.FAILED), message="the payout failed", timeout=40)
    synced.sandbox.control("DELETE", "faults")
    payout = payout_of(job_id)
    # Stripe has the transfer (made under another key, as after 24 h), our row does not know it.
    made = synced.sandbox.client().v1.transfers.create(params={
        "destination": partner.stripe_account_id, "amount": FEE, "currency": "usd", "source_transaction": charge_id,
        "transfer_group": f"job-{job_id}", "metadata": {"payout_id": str(payout.id)}})
    retry_payout(payout, by=OFFICE)
    db.session.commit()
    synced.wait_for(status_is(job_id, PayoutStatus.PAID), message="the payout adopted its transfer")
    assert payout_of(job_id).stripe_transfer_id == made.id
    assert [t.id for t in transfers(synced)] == [made.id]


def test_a_hold_period_holds_then_the_release_run_transfers(synced, login, crew):
    partner = ready_partner(synced.sandbox, hold_days=3)
    job_id = billed_job(synced, login, crew, partner)
    pay(synced, job_id)
    synced.wait_for(status_is(job_id, PayoutStatus.HELD), message="the payout held")
    payout = payout_of(job_id)
    assert payout.paid_on + timedelta(days=3) == payout.hold_until
    assert release_due_payouts(now=utcnow() + timedelta(days=2)) == []
    settle_all(synced)
    assert transfers(synced) == [] and payout_of(job_id).status == PayoutStatus.HELD

    released = release_due_payouts(now=payout.hold_until + timedelta(minutes=1))
    assert [p.id for p in released] == [payout.id]
    synced.wait_for(status_is(job_id, PayoutStatus.PAID), message="the released payout transferred")
    (transfer,) = transfers(synced)
    assert transfer.amount == FEE
    assert [e.kind for e in payout_of(job_id).entries] == [EntryKind.ACCRUED, EntryKind.HELD, EntryKind.RELEASED,
                                                           EntryKind.TRANSFERRED]


def test_a_partner_without_an_account_waits_then_onboarding_sends_the_payout(synced, login, crew):
    partner = partner_row()
    job_id = billed_job(synced, login, crew, partner)
    pay(synced, job_id)
    synced.wait_for(status_is(job_id, PayoutStatus.HELD_NO_ACCOUNT), message="held: no account")
    assert transfers(synced) == []

    url = start_onboarding(partner, by=OFFICE)
    partner = db.session.get(Partner, partner.id)
    assert partner.account_status == AccountStatus.ONBOARDING and url.startswith(synced.sandbox.url)
    # The partner presses "Complete onboarding"; Stripe sends them back to the office's partner page.
    assert no_redirect_post(url) == (303, f"http://portal.test/office/partners/{partner.id}")

    # account.updated reaches the worker: the partner is ready and the waiting payout goes out.
    synced.wait_for(status_is(job_id, PayoutStatus.PAID), message="the payout sent after onboarding")
    assert db.session.get(Partner, partner.id).account_status == AccountStatus.READY
    (transfer,) = transfers(synced)
    assert (transfer.destination, transfer.amount) == (partner.stripe_account_id, FEE)


def test_partial_then_full_refund_reverse_the_transfer_in_proportion(synced, login, crew):
    partner = ready_partner(synced.sandbox)
    job_id = billed_job(synced, login, crew, partner)
    charge_id = pay(synced, job_id)
    synced.wait_for(status_is(job_id, PayoutStatus.PAID), message="transferred")
    transfer_id = payout_of(job_id).stripe_transfer_id
    stripe_client = synced.sandbox.client()

    stripe_client.v1.refunds.create(params={"charge": charge_id, "amount": 4750})  # a quarter of 18999, about
    synced.wait_for(lambda: payout_of(job_id).amount_reversed > 0, message="a partial reversal")
    settle_all(synced)
    assert reversal_amounts(synced, transfer_id) == [475]  # 1900 × 4750 / 18999 = 475.02 → 475
    assert payout_of(job_id).status == PayoutStatus.PAID
    # The same refund seen again (another event, reconcile) reverses nothing more.
    on_refund(live_record(job_id), event_id="evt_seen_again")
    db.session.commit()
    assert reversal_amounts(synced, transfer_id) == [475]

    stripe_client.v1.refunds.create(params={"charge": charge_id})
    synced.wait_for(status_is(job_id, PayoutStatus.REVERSED), message="fully reversed")
    settle_all(synced)
    assert reversal_amounts(synced, transfer_id) == [475, 1425]
    assert stripe_client.v1.transfers.retrieve(transfer_id).amount_reversed == FEE
    assert payout_of(job_id).amount_reversed == FEE


def test_a_full_refund_before_the_transfer_cancels_the_payout(synced, login, crew):
    partner = ready_partner(synced.sandbox, hold_days=7)
    job_id = billed_job(synced, login, crew, partner)
    charge_id = pay(synced, job_id)
    synced.wait_for(status_is(job_id, PayoutStatus.HELD), message="held")
    synced.sandbox.client().v1.refunds.create(params={"charge": charge_id})
    synced.wait_for(status_is(job_id, PayoutStatus.CANCELLED), message="cancelled")
    assert release_due_payouts(now=utcnow() + timedelta(days=8)) == []
    settle_all(synced)
    assert transfers(synced) == []


def test_a_dispute_with_the_reverse_policy_reverses_a_paid_transfer(synced, login, crew):
    partner = ready_partner(synced.sandbox, dispute_policy=DisputePolicy.REVERSE)
    job_id = billed_job(synced, login, crew, partner)
    charge_id = pay(synced, job_id)
    synced.wait_for(status_is(job_id, PayoutStatus.PAID), message="transferred")
    synced.sandbox.control("POST", f"charges/{charge_id}/dispute", {"reason": "fraudulent"})
    synced.wait_for(status_is(job_id, PayoutStatus.REVERSED), message="reversed on dispute")
    assert reversal_amounts(synced, payout_of(job_id).stripe_transfer_id) == [FEE]


def test_a_dispute_with_the_hold_policy_keeps_a_held_payout_and_leaves_a_paid_one(synced, login, crew):
    held_partner = ready_partner(synced.sandbox, name="Holding Partner", hold_days=2)
    held_job = billed_job(synced, login, crew, held_partner)
    held_charge = pay(synced, held_job)
    synced.wait_for(status_is(held_job, PayoutStatus.HELD), message="held")
    synced.sandbox.control("POST", f"charges/{held_charge}/dispute", {"reason": "fraudulent"})
    synced.wait_for(lambda: live_record(held_job).status == BillingStatus.DISPUTED, message="disputed")
    settle_all(synced)
    assert release_due_payouts(now=utcnow() + timedelta(days=3)) == []
    assert payout_of(held_job).status == PayoutStatus.HELD and transfers(synced) == []

    paid_partner = ready_partner(synced.sandbox, name="Paid Partner")
    paid_job = billed_job(synced, login, crew, paid_partner)
    paid_charge = pay(synced, paid_job)
    synced.wait_for(status_is(paid_job, PayoutStatus.PAID), message="transferred")
    synced.sandbox.control("POST", f"charges/{paid_charge}/dispute", {"reason": "fraudulent"})
    synced.wait_for(lambda: live_record(paid_job).status == BillingStatus.DISPUTED, message="disputed")
    settle_all(synced)
    payout = payout_of(paid_job)
    assert payout.status == PayoutStatus.PAID and payout.amount_reversed == 0
    assert reversal_amounts(synced, payout.stripe_transfer_id) == []


def dispute_then_decide(stack, job_id, charge_id, outcome):
    dispute = stack.sandbox.control("POST", f"charges/{charge_id}/dispute", {"reason": "fraudulent"})
    stack.wait_for(lambda: live_record(job_id).status == BillingStatus.DISPUTED, message="disputed")
    settle_all(stack)
    stack.sandbox.control("POST", f"disputes/{dispute['id']}/close", {"outcome": outcome})
    settle_all(stack)
    db.session.expire_all()


def test_a_won_dispute_pays_the_job_again_and_lets_the_held_fee_go(synced, login, crew):
    partner = ready_partner(synced.sandbox, hold_days=2)
    job_id = billed_job(synced, login, crew, partner)
    charge_id = pay(synced, job_id)
    synced.wait_for(status_is(job_id, PayoutStatus.HELD), message="held for the hold period")
    dispute_then_decide(synced, job_id, charge_id, "won")

    assert live_record(job_id).status == BillingStatus.PAID
    assert db.session.get(Job, job_id).billing_status == BillingStatus.PAID
    assert payout_of(job_id).status == PayoutStatus.HELD  # the hold period still runs
    assert [p.id for p in release_due_payouts(now=utcnow() + timedelta(days=3))] == [payout_of(job_id).id]
    synced.wait_for(status_is(job_id, PayoutStatus.PAID), message="transferred once the hold ended")
    assert [t.amount for t in transfers(synced)] == [FEE]
    actions = db.session.scalars(select(AuditEntry.action).where(AuditEntry.job_id == job_id)).all()
    assert "billing.dispute_won" in actions


def test_a_lost_dispute_takes_the_fee_back_before_or_after_its_transfer(synced, login, crew):
    held_partner = ready_partner(synced.sandbox, name="Holding Partner", hold_days=2)
    held_job = billed_job(synced, login, crew, held_partner)
    held_charge = pay(synced, held_job)
    synced.wait_for(status_is(held_job, PayoutStatus.HELD), message="held")
    dispute_then_decide(synced, held_job, held_charge, "lost")
    assert payout_of(held_job).status == PayoutStatus.CANCELLED and transfers(synced) == []

    paid_partner = ready_partner(synced.sandbox, name="Paid Partner")
    paid_job = billed_job(synced, login, crew, paid_partner)
    paid_charge = pay(synced, paid_job)
    synced.wait_for(status_is(paid_job, PayoutStatus.PAID), message="transferred")
    dispute_then_decide(synced, paid_job, paid_charge, "lost")
    payout = payout_of(paid_job)
    assert (payout.status, payout.amount_reversed) == (PayoutStatus.REVERSED, FEE)
    assert reversal_amounts(synced, payout.stripe_transfer_id) == [FEE]
    for job_id in (held_job, paid_job):
        assert live_record(job_id).status == BillingStatus.DISPUTED  # the money is gone for good


def test_cli_retry_failed_and_release(app):
    """`flask referrals retry --failed` queues failed payouts again; `release` moves ended holds on."""
    client_row = factories.client()
    partner = partner_row(hold_days=1)
    referral_row(partner, client=client_row)
    failed, held = (billed_record(client_row, status=BillingStatus.PAID) for _ in range(2))
    for billed in (failed, held):
        billed.record.amount_paid = billed.record.total
        settle_referral_fee(billed.record, event_id=f"evt_{billed.record.id}")
    db.session.commit()
    failed_payout, held_payout = payout_of(failed.job.id), payout_of(held.job.id)
    assert held_payout.status == PayoutStatus.HELD
    failed_payout.status, failed_payout.last_error = PayoutStatus.FAILED, "StripeUnavailable: Stripe error 500"
    db.session.commit()
    runner = app.test_cli_runner()

    retried = runner.invoke(args=["referrals", "retry", "--failed"])
    assert retried.exit_code == 0, retried.output
    assert f"retrying payout {failed_payout.id}" in retried.output and "1 failed payout(s)" in retried.output
    db.session.expire_all()
    assert payout_of(failed.job.id).status == PayoutStatus.PENDING

    released = runner.invoke(args=["referrals", "release"])
    assert released.exit_code == 0 and "0 payout(s)" in released.output  # the hold has a day to run
    db.session.query(Payout).filter(Payout.id == held_payout.id).update(
        {"hold_until": utcnow() - timedelta(minutes=1)})
    db.session.commit()
    released = runner.invoke(args=["referrals", "release"])
    assert released.exit_code == 0, released.output
    assert f"payout {held_payout.id}" in released.output
    db.session.expire_all()
    # Hold over, but the partner has no connected account yet: it waits for one, visibly.
    assert payout_of(held.job.id).status == PayoutStatus.HELD_NO_ACCOUNT
