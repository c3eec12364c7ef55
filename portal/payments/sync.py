"""Precedence of billing statuses, and applying a status to records under a row lock.

The model is shared/billing-states.md (and docs/architecture.md): state only moves forward by rank; among equals
the newer event wins; `void` and `uncollectible` end a record, except uncollectible → paid.
"""
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import or_, select
from sqlalchemy.orm import joinedload

from portal.audit.services import record
from portal.billing.models import BillingRecord, BillingStatus as S
from portal.extensions import db

RANK = {
    S.PENDING: 0, S.FAILED: 0, S.DRAFT: 1, S.SENT: 2,
    S.PROCESSING: 3, S.PAYMENT_FAILED: 3, S.OVERDUE: 3,
    S.PAID: 4, S.PARTIALLY_REFUNDED: 5, S.DISPUTED: 5, S.REFUNDED: 6,
}
ENDING = frozenset({S.VOID, S.UNCOLLECTIBLE})


def confirms_payment(old, new):
    """The move that first says money arrived: from below paid to paid or beyond (refund, dispute)."""
    return RANK.get(old, 0) < RANK[S.PAID] <= RANK.get(new, -1)


class Verdict:
    APPLY = "apply"
    SAME = "same"  # already there: nothing to do, nothing to log
    LOWER = "lower"  # refused by rank: logged as ignored
    OLDER = "older"  # an equal-ranked state from an older event: logged as ignored
    TIE = "tie"  # equal rank, same second: only Stripe's current state can tell


def judge(current, target, *, event_at, last_event_at):
    """Whether `target` may replace `current` (billing-states.md, "Precedence")."""
    if current == target:
        return Verdict.SAME
    if current == S.VOID:
        return Verdict.LOWER
    if current == S.UNCOLLECTIBLE:
        return Verdict.APPLY if target == S.PAID else Verdict.LOWER
    if target in ENDING:
        # Stripe cannot void or write off what was paid; a late "voided" must not erase a payment.
        return Verdict.APPLY if RANK[current] < RANK[S.PAID] else Verdict.LOWER
    if RANK[target] > RANK[current]:
        return Verdict.APPLY
    if RANK[target] < RANK[current]:
        return Verdict.LOWER
    if last_event_at is None or event_at > last_event_at:
        return Verdict.APPLY
    if event_at == last_event_at:
        return Verdict.TIE
    return Verdict.OLDER


def from_unix(seconds):
    return datetime.fromtimestamp(seconds, timezone.utc)


@dataclass
class Change:
    """What one event or one reconcile pass says a record should become."""

    status: S
    at: datetime  # the event's `created`, or now for Stripe's state read now
    amount_paid: int | None = None
    amount_refunded: int | None = None
    hosted_url: str | None = None
    invoice_number: str | None = None
    due_at: datetime | None = None


def lock_records(*, invoice_id=None, link_id=None, record_ids=()):
    """The records for these Stripe ids, locked FOR UPDATE in id order so concurrent events serialise."""
    conditions = []
    if invoice_id:
        conditions.append(BillingRecord.stripe_invoice_id == invoice_id)
    if link_id:
        conditions.append(BillingRecord.stripe_payment_link_id == link_id)
    ids = [int(i) for i in record_ids if str(i).isdigit()]
    if ids:
        conditions.append(BillingRecord.id.in_(ids))
    if not conditions:
        return []
    return db.session.scalars(
        select(BillingRecord).where(or_(*conditions)).order_by(BillingRecord.id)
        .options(joinedload(BillingRecord.job))  # every change mirrors onto the job: load it with the lock
        .with_for_update(of=BillingRecord).execution_options(populate_existing=True)
    ).all()


def apply_change(billing_record, change, *, by, note_ignored=True):
    """Move one locked record as `change` says, if precedence allows; returns the verdict.

    Every change goes through move_record, so the job mirrors it and Job.updated_at (the
    board's version) moves.
    """
    refresh_details(billing_record, change)
    # Amounts are facts whatever the status precedence says (a refund processed before the payment still paid).
    update_amounts(billing_record, change)
    verdict = judge(billing_record.status, change.status, event_at=change.at,
                    last_event_at=billing_record.last_event_at)
    if verdict == Verdict.SAME:
        return verdict
    if verdict != Verdict.APPLY:
        if note_ignored:
            record(by, "payments.event_ignored", billing_record, job=billing_record.job, field="status",
                   old=billing_record.status, new=change.status,
                   detail={"record_id": billing_record.id, "reason": verdict})
        return verdict
    billing_record.last_event_at = change.at
    if change.status == S.VOID and billing_record.live:
        from portal.billing.services import close_record

        close_record(billing_record, S.VOID, by=by, reason="Voided in Stripe")
    else:
        set_status(billing_record, change.status, by=by)
    return verdict


def set_status(billing_record, status, *, by):
    """Move the record; the job mirrors a live record only (a closed one keeps its history)."""
    from portal.billing.pipeline import move_record

    if billing_record.live:
        move_record(billing_record, status, commit=False, by=by)
        return
    record(by, "billing.record_status", billing_record, job=billing_record.job, field="status",
           old=billing_record.status, new=status, detail={"record_id": billing_record.id})
    billing_record.status = status


def close_dispute(billing_record, *, won, at, by):
    """The bank decided the dispute on this locked record; returns the verdict.

    Won (or an inquiry closed): the payment stands, and a disputed record returns to paid, or partly
    refunded: the one move down in rank (docs/architecture.md refines billing-states.md here). Lost: the
    money is gone and the record ends disputed, even when the decision arrives before the opening.
    """
    if billing_record.dispute_closed_at is not None:
        return Verdict.SAME  # a redelivered decision
    billing_record.dispute_closed_at = at
    record(by, "billing.dispute_won" if won else "billing.dispute_lost", billing_record, job=billing_record.job,
           detail={"record_id": billing_record.id, "status": billing_record.status.value})
    if won:
        if billing_record.status != S.DISPUTED:
            return Verdict.SAME
        target = S.PARTIALLY_REFUNDED if billing_record.amount_refunded else S.PAID
    else:
        target = S.DISPUTED
        if judge(billing_record.status, target, event_at=at, last_event_at=billing_record.last_event_at) not in (
                Verdict.APPLY, Verdict.TIE):
            return Verdict.SAME
    billing_record.last_event_at = at
    set_status(billing_record, target, by=by)
    return Verdict.APPLY


def dispute_already_decided(billing_record, opened_at):
    """Whether a "dispute opened" event is older than the decision this record already has."""
    return billing_record.dispute_closed_at is not None and opened_at <= billing_record.dispute_closed_at


def update_amounts(billing_record, change):
    # Amounts only grow: a late event carrying a smaller refund must not shrink what we know.
    if change.amount_paid is not None and change.amount_paid > billing_record.amount_paid:
        billing_record.amount_paid = change.amount_paid
    if change.amount_refunded is not None and change.amount_refunded > billing_record.amount_refunded:
        billing_record.amount_refunded = change.amount_refunded


def refresh_details(billing_record, change):
    if change.hosted_url and not billing_record.hosted_url:
        billing_record.hosted_url = change.hosted_url
    if change.invoice_number and not billing_record.invoice_number:
        billing_record.invoice_number = change.invoice_number
    if change.due_at and not billing_record.due_at:
        billing_record.due_at = change.due_at


INVOICE_STATUS = {"draft": S.DRAFT, "open": S.SENT, "paid": S.PAID, "void": S.VOID, "uncollectible": S.UNCOLLECTIBLE}


def invoice_change(invoice, status, at, records):
    """A Change for an invoice's records; a batch invoice's payment is each record's own total."""
    paid = None
    if status == S.PAID:
        paid = invoice.get("amount_paid") if len(records) == 1 else None
    return Change(status=status, at=at, amount_paid=paid, hosted_url=invoice.get("hosted_invoice_url"),
                  invoice_number=invoice.get("number"),
                  due_at=from_unix(invoice["due_date"]) if invoice.get("due_date") else None)


def current_invoice_change(invoice_id, records, *, at):
    """What Stripe says about the invoice now (re-read), as a Change; None for a state we do not map."""
    from portal.billing import stripe_gateway as gateway

    invoice = gateway.retrieve_invoice(invoice_id).to_dict()
    status = INVOICE_STATUS.get(invoice["status"])
    if status == S.SENT and invoice.get("attempted"):
        # An open invoice is still collectable; its newest payment attempt says whether money is in flight.
        intent = gateway.latest_payment_intent_for_invoice(invoice_id)
        if intent is not None and intent.status == "processing":
            status = S.PROCESSING
        elif intent is not None and intent.status == "requires_payment_method":
            status = S.PAYMENT_FAILED
    return None if status is None else invoice_change(invoice, status, at, records)


def current_link_change(link_id, *, at):
    """What Stripe says about a payment link's payments now: its newest decisive checkout session."""
    from portal.billing import stripe_gateway as gateway

    for session in gateway.checkout_sessions_for_link(link_id):
        if session.status != "complete":
            continue
        if session.payment_status == "paid":
            return Change(status=S.PAID, at=at, amount_paid=session.amount_total)
        intent = gateway.retrieve_payment_intent(session.payment_intent) if session.payment_intent else None
        if intent is not None and intent.status == "processing":
            return Change(status=S.PROCESSING, at=at)
        if intent is not None and intent.status == "requires_payment_method":
            return Change(status=S.PAYMENT_FAILED, at=at)
    return None


def fill_amount_paid(billing_record):
    """A paid record with no amount from Stripe (a batch share) was paid its own total."""
    if billing_record.status == S.PAID and billing_record.amount_paid == 0:
        billing_record.amount_paid = billing_record.total
