"""The registry: each Stripe event type Closeout handles, and what it does to billing records.

A handler finds the records (by our metadata, then by the Stripe ids we stored), locks them,
and hands sync.apply_change the status the event implies; precedence decides.
"""
from portal.audit.services import record
from portal.billing.models import BillingStatus as S
from portal.billing.pipeline import RECORD_METADATA_KEY
from portal.money import spread
from portal.payments.sync import (Change, Verdict, apply_change, close_dispute, confirms_payment,
                                  current_invoice_change, current_link_change, dispute_already_decided,
                                  fill_amount_paid, from_unix, invoice_change, lock_records)
from portal.timeutil import utcnow

HANDLERS = {}


def handles(*event_types):
    def register(handler):
        for event_type in event_types:
            HANDLERS[event_type] = handler
        return handler
    return register


def metadata_record_ids(stripe_object):
    value = (stripe_object.get("metadata") or {}).get(RECORD_METADATA_KEY)
    return [value] if value else []


def job_records(stripe_object):
    """The live record of the job named in metadata, the last way to find a job (issue 5, §2)."""
    from sqlalchemy import select

    from portal.billing.models import BillingRecord
    from portal.extensions import db

    job_id = (stripe_object.get("metadata") or {}).get("job_id")
    if not job_id or not str(job_id).isdigit():
        return []
    return db.session.scalars(select(BillingRecord).where(BillingRecord.job_id == int(job_id), BillingRecord.live)
                              .with_for_update()).all()


def apply_to_all(records, change, *, by, reread):
    """Apply one change to every record of the bill; a tie on rank and second is settled by Stripe's state now."""
    results = []
    for billing_record in records:
        old = billing_record.status
        verdict = apply_change(billing_record, change, by=by)
        if verdict == Verdict.TIE:
            current = reread()
            verdict = apply_change(billing_record, current, by=by) if current else Verdict.OLDER
        fill_amount_paid(billing_record)
        if verdict == Verdict.APPLY and confirms_payment(old, billing_record.status):
            from portal.payments.services import on_payment_confirmed

            on_payment_confirmed(billing_record, event_id=by.ref)
        results.append((billing_record, verdict))
    return results


INVOICE_EVENTS = {
    "invoice.finalized": S.SENT,
    "invoice.sent": S.SENT,
    "invoice.paid": S.PAID,
    "invoice.payment_failed": S.PAYMENT_FAILED,
    "invoice.voided": S.VOID,
    "invoice.marked_uncollectible": S.UNCOLLECTIBLE,
    "invoice.overdue": S.OVERDUE,  # only with Billing automations; our own sweep covers the rest
}


@handles(*INVOICE_EVENTS)
def on_invoice_event(event, *, by):
    invoice = event["data"]["object"]
    records = lock_records(invoice_id=invoice["id"], record_ids=metadata_record_ids(invoice)) or job_records(invoice)
    change = invoice_change(invoice, INVOICE_EVENTS[event["type"]], from_unix(event["created"]), records)
    return apply_to_all(records, change, by=by,
                        reread=lambda: current_invoice_change(invoice["id"], records, at=utcnow()))


CHECKOUT_EVENTS = {
    "checkout.session.completed": None,  # paid, or processing while a bank debit clears
    "checkout.session.async_payment_succeeded": S.PAID,
    "checkout.session.async_payment_failed": S.PAYMENT_FAILED,
}


@handles(*CHECKOUT_EVENTS)
def on_checkout_event(event, *, by):
    session = event["data"]["object"]
    status = CHECKOUT_EVENTS[event["type"]]
    if status is None:
        status = S.PAID if session.get("payment_status") == "paid" else S.PROCESSING
    records = (lock_records(link_id=session.get("payment_link"), record_ids=metadata_record_ids(session))
               or job_records(session))
    change = Change(status=status, at=from_unix(event["created"]),
                    amount_paid=session.get("amount_total") if status == S.PAID else None)
    link_id = session.get("payment_link")
    return apply_to_all(records, change, by=by,
                        reread=lambda: current_link_change(link_id, at=utcnow()) if link_id else None)


def records_for_payment(payment_intent_id, stripe_object):
    """A payment's records: a link's carry our metadata; an invoice's are found through its invoice payment."""
    from portal.billing import stripe_gateway as gateway

    record_ids = metadata_record_ids(stripe_object)
    if record_ids:
        return lock_records(record_ids=record_ids), None
    if not payment_intent_id:
        return [], None
    invoice_id = gateway.invoice_for_payment_intent(payment_intent_id)
    if invoice_id:
        return lock_records(invoice_id=invoice_id), invoice_id
    intent = gateway.retrieve_payment_intent(payment_intent_id).to_dict()
    return lock_records(record_ids=metadata_record_ids(intent)) or job_records(intent), None


def payment_reread(records, invoice_id):
    def reread():
        if invoice_id:
            return current_invoice_change(invoice_id, records, at=utcnow())
        links = [r.stripe_payment_link_id for r in records if r.stripe_payment_link_id]
        return current_link_change(links[0], at=utcnow()) if links else None
    return reread


PAYMENT_INTENT_EVENTS = {"payment_intent.processing": S.PROCESSING, "payment_intent.payment_failed": S.PAYMENT_FAILED}


@handles(*PAYMENT_INTENT_EVENTS)
def on_payment_intent_event(event, *, by):
    intent = event["data"]["object"]
    records, invoice_id = records_for_payment(intent["id"], intent)
    change = Change(status=PAYMENT_INTENT_EVENTS[event["type"]], at=from_unix(event["created"]))
    return apply_to_all(records, change, by=by, reread=payment_reread(records, invoice_id))


@handles("charge.refunded")
def on_charge_refunded(event, *, by):
    charge = event["data"]["object"]
    records, invoice_id = records_for_payment(charge.get("payment_intent"), charge)
    refunded, amount = charge.get("amount_refunded") or 0, charge.get("amount") or 0
    at, reread = from_unix(event["created"]), payment_reread(records, invoice_id)
    if len(records) == 1:
        status = S.REFUNDED if refunded >= amount else S.PARTIALLY_REFUNDED
        changes = [(records[0], Change(status=status, at=at, amount_paid=amount, amount_refunded=refunded))]
    else:
        changes = batch_refund_changes(records, refunded, at)
    results = []
    for billing_record, change in changes:
        results += apply_to_all([billing_record], change, by=by, reread=reread)
    from portal.referrals.settlement import on_refund

    for billing_record, _ in results:
        on_refund(billing_record, event_id=by.ref)  # the partner's fee follows the money back (issue 6)
    return results


def batch_refund_changes(records, refunded, at):
    """A batch invoice's refund names no job: what it adds to the refunds we know is spread over the jobs in
    proportion to what each has left to refund (money.spread), so each job's refund only grows and the jobs'
    refunds add up to Stripe's. A job whose share is still nothing keeps its status."""
    paid = [billing_record.amount_paid or billing_record.total for billing_record in records]
    room = [paid_here - billing_record.amount_refunded for paid_here, billing_record in zip(paid, records)]
    known = sum(billing_record.amount_refunded for billing_record in records)
    shares = spread(min(refunded - known, sum(room)), room)
    changes = []
    for billing_record, paid_here, share in zip(records, paid, shares):
        now_refunded = billing_record.amount_refunded + share
        if now_refunded:
            status = S.REFUNDED if now_refunded >= paid_here else S.PARTIALLY_REFUNDED
            changes.append((billing_record, Change(status=status, at=at, amount_paid=paid_here,
                                                   amount_refunded=now_refunded)))
    return changes


@handles("charge.dispute.created")
def on_dispute_created(event, *, by):
    dispute = event["data"]["object"]
    records, invoice_id = records_for_payment(dispute.get("payment_intent"), dispute)
    opened_at = from_unix(event["created"])
    decided = [r for r in records if dispute_already_decided(r, opened_at)]
    for billing_record in decided:  # delivered after the bank's decision: the decision stands
        record(by, "payments.event_ignored", billing_record, job=billing_record.job, field="status",
               old=billing_record.status, new=S.DISPUTED,
               detail={"record_id": billing_record.id, "reason": "dispute already decided"})
    records = [r for r in records if r not in decided]
    change = Change(status=S.DISPUTED, at=opened_at)
    results = apply_to_all(records, change, by=by, reread=payment_reread(records, invoice_id))
    from portal.referrals.settlement import on_dispute

    for billing_record, _ in results:
        on_dispute(billing_record, event_id=by.ref)  # hold or reverse, per the partner's policy (issue 6)
    return results + [(billing_record, Verdict.OLDER) for billing_record in decided]


@handles("charge.dispute.closed")
def on_dispute_closed(event, *, by):
    """The bank decided: won (or an inquiry closed) keeps the money, lost takes it; the partner's fee follows."""
    dispute = event["data"]["object"]
    won = dispute.get("status") in ("won", "warning_closed")
    records, _ = records_for_payment(dispute.get("payment_intent"), dispute)
    from portal.referrals.settlement import on_dispute_decided

    results = []
    for billing_record in records:
        verdict = close_dispute(billing_record, won=won, at=from_unix(event["created"]), by=by)
        if verdict == Verdict.APPLY or not won:
            on_dispute_decided(billing_record, won=won, event_id=by.ref)
        results.append((billing_record, verdict))
    return results


@handles("account.updated")
def on_account_updated(event, *, by):
    """A referral partner's connected account changed: ready for transfers, or restricted again."""
    from portal.referrals.settlement import on_account_updated as apply_account

    return apply_account(event["data"]["object"], by=by)


# `flask stripe setup` registers exactly these, and reconcile asks for them. Events on the partners' connected
# accounts reach only a Connect endpoint, so setup registers two: one for each list.
HANDLED_EVENTS = tuple(sorted(HANDLERS))
CONNECT_EVENTS = ("account.updated",)
ACCOUNT_EVENTS = tuple(event_type for event_type in HANDLED_EVENTS if event_type not in CONNECT_EVENTS)
