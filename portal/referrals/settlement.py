"""Settling referral fees through Stripe Connect, exactly once (issue 6, "Settlement", "Refunds and disputes").

A confirmed payment accrues the fee into the payout row (unique per job and partner), which is then held (a
hold period, a dispute, or no connected account yet) or queued for its transfer. The transfer task holds the
row's lock across the Stripe call, so a refund or dispute arriving meanwhile waits and then sees the transfer;
its idempotency key is the row's, and a row that was attempted before looks its transfer up at Stripe first
(the key is forgotten after 24 h). Every step is a PayoutEntry, unique per (payout, kind, ref), and an audit entry.
"""
import uuid
from datetime import timedelta

from flask import current_app
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from portal.audit.models import Source
from portal.audit.services import Actor, record
from portal.billing import stripe_gateway as gateway
from portal.billing.models import BillingStatus
from portal.errors import TransitionNotAllowed
from portal.extensions import db
from portal.queue import enqueue_after_commit, is_queued
from portal.referrals.attribution import business_date, has_room, referral_for_job
from portal.referrals.fees import compute_fee, reversal_target, rule_for
from portal.referrals.models import (AccountStatus, DisputePolicy, EntryKind, Partner, Payout, PayoutEntry,
                                     PayoutStatus)
from portal.timeutil import utcnow

TRANSFER_TASK = "portal.referrals.tasks.transfer_payout"
WORKER = Actor.system("referral payouts")
UNTRANSFERRED = frozenset({PayoutStatus.PENDING, PayoutStatus.HELD, PayoutStatus.HELD_NO_ACCOUNT,
                           PayoutStatus.FAILED})
CLOSED = frozenset({PayoutStatus.REVERSED, PayoutStatus.CANCELLED})
STUCK_AFTER = timedelta(minutes=15)


def event_actor(event_id, label):
    """The actor for a step caused by a Stripe event (or by reconcile, which passes "reconcile")."""
    source = Source.RECONCILE if event_id == "reconcile" else Source.WEBHOOK
    return Actor(source, event_id, label)


def transfer_group(job_id):
    """Stripe's transfer_group for a job's transfers: the lookup key when an idempotency key may be gone."""
    return f"job-{job_id}"


# --- The ledger --------------------------------------------------------------------------------------

def _insert(model):
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    return dialect.insert(model.__table__)


def add_entry(payout, kind, ref, *, amount=0, stripe_id=None, detail=None):
    """Record one step of a payout once; a repeat of the same (kind, ref) adds nothing. True when new."""
    statement = (_insert(PayoutEntry)
                 .values(payout_id=payout.id, kind=kind, ref=str(ref)[:120], amount=amount, stripe_id=stripe_id,
                         detail=detail or {}, created_at=utcnow())
                 .on_conflict_do_nothing(index_elements=["payout_id", "kind", "ref"])
                 .returning(PayoutEntry.__table__.c.id))
    return db.session.execute(statement).scalar() is not None


def lock_payout(payout_id):
    """The payout, locked FOR UPDATE and freshly read; every change to a payout happens under this lock."""
    return db.session.scalars(select(Payout).where(Payout.id == payout_id).with_for_update(of=Payout)
                              .execution_options(populate_existing=True)).one_or_none()


def lock_payouts_of(billing_record):
    """A billing record's payouts, locked in id order."""
    return db.session.scalars(select(Payout).where(Payout.billing_record_id == billing_record.id)
                              .order_by(Payout.id).with_for_update(of=Payout)
                              .execution_options(populate_existing=True)).all()


def move(payout, status, *, by, action, detail=None):
    """Set the payout's status, with its audit entry."""
    old = payout.status
    payout.status = status
    record(by, action, payout, job=payout.job, field="status", old=old, new=status,
           detail={"payout_id": payout.id, **(detail or {})})


# --- A confirmed payment ------------------------------------------------------------------------------

def settle_referral_fee(billing_record, *, event_id, by=None):
    """Accrue the referring partner's fee for a confirmed payment into its payout row; None when nobody earns."""
    job = billing_record.job
    referral = billing_record.referral or referral_for_job(job, on=business_date(billing_record.created_at))
    if referral is None:
        return None
    by = by or event_actor(event_id, "referral fee on payment")
    if not has_room(referral, job_id=job.id):
        record(by, "referrals.fee_not_earned", referral, job=job,
               detail={"referral_id": referral.id, "reason": f"already earned on {referral.max_paid_jobs} paid jobs"})
        return None
    partner = referral.partner
    paid = billing_record.amount_paid or billing_record.total
    rule = rule_for(partner, referral)
    fee = compute_fee(rule, paid=paid, subtotal=billing_record.subtotal, total=billing_record.total)
    now = utcnow()
    # Ten deliveries of one paid event (or a webhook racing reconcile) make one row: the unique constraint decides.
    payout_id = db.session.execute(
        _insert(Payout).values(
            job_id=job.id, partner_id=partner.id, referral_id=referral.id, billing_record_id=billing_record.id,
            currency=billing_record.currency, amount_paid=paid, fee_base_amount=fee.base_amount, amount=fee.amount,
            amount_reversed=0, rule=rule.as_json(), status=PayoutStatus.PENDING, attempts=0, paid_on=now,
            created_at=now, updated_at=now,
        ).on_conflict_do_nothing(index_elements=["job_id", "partner_id"]).returning(Payout.__table__.c.id)
    ).scalar()
    if payout_id is None:
        return None
    payout = lock_payout(payout_id)
    add_entry(payout, EntryKind.ACCRUED, event_id, amount=fee.amount,
              detail={"amount_paid": paid, "fee_base_amount": fee.base_amount, "rule": rule.as_json()})
    record(by, "referrals.fee_accrued", payout, job=job,
           detail={"payout_id": payout.id, "partner_id": partner.id, "referral_id": referral.id,
                   "amount_paid": paid, "fee": fee.amount, "currency": payout.currency})
    route(payout, by=by, now=now)
    return payout


def partner_ready(partner):
    """Whether transfers can go to the partner now."""
    return partner.account_status == AccountStatus.READY and bool(partner.stripe_account_id)


def held_by_dispute(payout):
    """A disputed payment keeps an untransferred payout held when the partner's policy says hold."""
    return (payout.billing_record.status == BillingStatus.DISPUTED
            and payout.partner.dispute_policy == DisputePolicy.HOLD)


def route(payout, *, by, now=None):
    """Where an untransferred payout goes next: held (hold period, dispute, no account) or queued for transfer."""
    now = now or utcnow()
    partner = payout.partner
    if partner.hold_days and payout.hold_until is None:
        payout.hold_until = payout.paid_on + timedelta(days=partner.hold_days)
    if held_by_dispute(payout):
        hold(payout, "dispute", by=by)
    elif payout.hold_until is not None and payout.hold_until > now:
        hold(payout, f"until-{payout.hold_until:%Y%m%dT%H%M%S}", by=by, detail={"hold_until": str(payout.hold_until)})
    elif not partner_ready(partner):
        if payout.status != PayoutStatus.HELD_NO_ACCOUNT:
            add_entry(payout, EntryKind.HELD, "no-account", detail={"reason": "partner has no ready account"})
            move(payout, PayoutStatus.HELD_NO_ACCOUNT, by=by, action="referrals.payout_held")
    else:
        queue_transfer(payout, by=by)


def hold(payout, ref, *, by, detail=None):
    """Hold the payout (a hold period or a dispute), once per reason."""
    add_entry(payout, EntryKind.HELD, ref, detail=detail)
    if payout.status != PayoutStatus.HELD:
        move(payout, PayoutStatus.HELD, by=by, action="referrals.payout_held", detail={"reason": ref})


def queue_transfer(payout, *, by):
    """PENDING, and the transfer task enqueued once this transaction commits (the row exists first)."""
    from portal.billing.services import retry_policy

    if payout.status != PayoutStatus.PENDING:
        add_entry(payout, EntryKind.RELEASED, f"release-{payout.status.value}-{payout.attempts}")
        move(payout, PayoutStatus.PENDING, by=by, action="referrals.payout_released")
    payout.rq_job_id = f"payout-{payout.id}-{uuid.uuid4().hex[:12]}"
    enqueue_after_commit(db.session, TRANSFER_TASK, payout.id, retry=retry_policy(), job_id=payout.rq_job_id)


# --- The transfer (worker) ----------------------------------------------------------------------------

def transfer_payout(payout_id):
    """Send one payout's fee to the partner's connected account, at most once. Commits; returns what it did."""
    # Count the attempt in its own commit first: if we die during the Stripe call, the next run knows to look.
    noted = db.session.execute(
        Payout.__table__.update()
        .where(Payout.id == payout_id, Payout.status == PayoutStatus.PENDING, Payout.stripe_transfer_id.is_(None))
        .values(attempts=Payout.attempts + 1, updated_at=utcnow()).returning(Payout.attempts)
    ).scalar()
    db.session.commit()
    if noted is None:
        return "nothing to do"
    payout = lock_payout(payout_id)
    if payout.status != PayoutStatus.PENDING or payout.stripe_transfer_id:
        db.session.commit()
        return "nothing to do"
    if not partner_ready(payout.partner):
        route(payout, by=WORKER)
        db.session.commit()
        return payout.status.value
    net = payout.amount - payout.amount_reversed
    if net <= 0:
        add_entry(payout, EntryKind.TRANSFERRED, "nothing-to-transfer", detail={"reason": "the fee is zero"})
        payout.transferred_at = utcnow()
        move(payout, PayoutStatus.PAID, by=WORKER, action="referrals.payout_transferred")
        db.session.commit()
        return "nothing to transfer"
    transfer = find_transfer(payout) if noted > 1 else None
    if transfer is None:
        if payout.source_charge_id is None:
            payout.source_charge_id = source_charge_for(payout.billing_record)
        transfer = gateway.create_transfer(
            destination=payout.partner.stripe_account_id, amount=net, currency=payout.currency,
            source_transaction=payout.source_charge_id, transfer_group=transfer_group(payout.job_id),
            metadata={"payout_id": str(payout.id), "job_id": str(payout.job_id),
                      "partner_id": str(payout.partner_id)},
            key=transfer_key(payout),
        )
    mark_transferred(payout, transfer, by=WORKER)
    db.session.commit()
    return "transferred"


def transfer_key(payout):
    """`payout-<id>-transfer`, versioned past each balance_insufficient answer.

    Stripe keeps a request's answer under its key, failures included, so a retry under the same key would only
    replay "insufficient funds"; that answer also proves nothing was created, so a new key cannot double it.
    """
    refused = db.session.scalar(
        select(db.func.count()).select_from(PayoutEntry)
        .where(PayoutEntry.payout_id == payout.id, PayoutEntry.kind == EntryKind.TRANSFER_FAILED,
               PayoutEntry.detail["balance_insufficient"].as_boolean().is_(True)))
    return f"payout-{payout.id}-transfer" + (f"-v{refused + 1}" if refused else "")


def find_transfer(payout):
    """The transfer Stripe already has for this payout (by transfer group and metadata), or None."""
    for transfer in gateway.transfers_in_group(transfer_group(payout.job_id)):
        if gateway.metadata_of(transfer).get("payout_id") == str(payout.id):
            return transfer
    return None


def mark_transferred(payout, transfer, *, by):
    """Keep the transfer on the payout, which is now paid."""
    payout.stripe_transfer_id = transfer.id
    payout.transferred_at = utcnow()
    payout.last_error = None
    add_entry(payout, EntryKind.TRANSFERRED, transfer.id, amount=transfer.amount, stripe_id=transfer.id,
              detail={"destination": payout.partner.stripe_account_id, "source_transaction": payout.source_charge_id})
    move(payout, PayoutStatus.PAID, by=by, action="referrals.payout_transferred",
         detail={"transfer_id": transfer.id, "amount": transfer.amount})


def source_charge_for(billing_record):
    """The charge that paid the bill, so the transfer is funded by it (`source_transaction`); None if offline."""
    if billing_record.stripe_invoice_id:
        return gateway.charge_for_invoice(billing_record.stripe_invoice_id)
    if billing_record.stripe_payment_link_id:
        for session in gateway.checkout_sessions_for_link(billing_record.stripe_payment_link_id):
            if session.payment_status == "paid" and session.payment_intent:
                return gateway.charge_of_payment_intent(session.payment_intent)
    return None


def note_transfer_failure(payout_id, error, *, final):
    """Keep a failed attempt on the row; the last one (or a refusal) makes it FAILED, for a person's Retry."""
    db.session.rollback()
    payout = lock_payout(payout_id)
    if payout is None or payout.status != PayoutStatus.PENDING:
        db.session.commit()
        return
    payout.last_error = f"{type(error).__name__}: {error}"[:4000]
    add_entry(payout, EntryKind.TRANSFER_FAILED, f"attempt-{payout.attempts}",
              detail={"error": payout.last_error, "final": final,
                      "balance_insufficient": isinstance(error, gateway.BalanceInsufficient)})
    if final:
        move(payout, PayoutStatus.FAILED, by=WORKER, action="referrals.payout_failed",
             detail={"error": payout.last_error})
    db.session.commit()


def retry_payout(payout, *, by):
    """A person's Retry on a failed payout: queued again; the lookup before creating keeps it to one transfer."""
    payout = lock_payout(payout.id)
    if payout.status != PayoutStatus.FAILED:
        raise TransitionNotAllowed("Only a failed payout can be retried.")
    add_entry(payout, EntryKind.RELEASED, f"retry-{payout.attempts}", detail={"by": by.label})
    move(payout, PayoutStatus.PENDING, by=by, action="referrals.payout_retry")
    queue_transfer(payout, by=by)
    return payout


def retry_failed_payouts(*, by):
    """`referrals retry --failed`: every failed payout queued again; returns them."""
    failed = db.session.scalars(select(Payout.id).where(Payout.status == PayoutStatus.FAILED)
                                .order_by(Payout.id)).all()
    return [retry_payout(db.session.get(Payout, payout_id), by=by) for payout_id in failed]


# --- Holds ------------------------------------------------------------------------------------------------

def release_due_payouts(now=None):
    """Scheduled: held payouts whose hold period ended go out (not while disputed); lost transfer tasks are re-queued.

    Commits; returns the payouts released or re-queued.
    """
    now = now or utcnow()
    by = Actor.system("payout release run")
    due = db.session.scalars(
        select(Payout).where(Payout.status == PayoutStatus.HELD, Payout.hold_until <= now).order_by(Payout.id)
        .with_for_update(of=Payout, skip_locked=True)).all()
    released = []
    for payout in due:
        if held_by_dispute(payout):
            continue
        route(payout, by=by, now=now)
        released.append(payout)
    # Stuck is measured on the real clock: a release run told "now" is days ahead must not call fresh rows stuck.
    stuck = db.session.scalars(
        select(Payout).where(Payout.status == PayoutStatus.PENDING, Payout.updated_at < utcnow() - STUCK_AFTER,
                             Payout.id.not_in([payout.id for payout in released]))
        .order_by(Payout.id).with_for_update(of=Payout, skip_locked=True)).all()
    for payout in stuck:
        if payout.rq_job_id is None or not is_queued(payout.rq_job_id):
            queue_transfer(payout, by=by)  # Redis lost the task, or the web process died before enqueueing
            payout.updated_at = utcnow()
            released.append(payout)
    db.session.commit()
    return released


def release_for_partner(partner, *, by):
    """A partner's account became ready: its payouts waiting for one go out (holds and disputes still apply)."""
    waiting = db.session.scalars(
        select(Payout).where(Payout.partner_id == partner.id, Payout.status == PayoutStatus.HELD_NO_ACCOUNT)
        .order_by(Payout.id).with_for_update(of=Payout)).all()
    for payout in waiting:
        route(payout, by=by)
    return waiting


# --- Connected accounts ----------------------------------------------------------------------------------

def start_onboarding(partner, *, by, return_path=None, refresh_path=None):
    """The URL to send the partner to: their Express account, created once, and a fresh Account Link to finish it.

    Stripe returns to `return_path` when onboarding ends, and to `refresh_path` when the link expired (a page that
    calls this again for a fresh link): the office's partner page by default, the partner portal when the partner
    starts it. Commits.
    """
    if not partner.stripe_account_id:
        account = gateway.create_connected_account(email=partner.email or None,
                                                   metadata={"partner_id": str(partner.id)},
                                                   key=f"partner-{partner.id}-account")
        partner.stripe_account_id = account.id
        record(by, "referrals.account_created", partner, field="stripe_account_id", new=account.id)
    if partner.account_status == AccountStatus.NONE:
        partner.account_status = AccountStatus.ONBOARDING
        record(by, "referrals.onboarding_started", partner, field="account_status", old=AccountStatus.NONE,
               new=AccountStatus.ONBOARDING)
    db.session.commit()  # the account id is kept the moment it is known
    base = current_app.config["PUBLIC_URL"].rstrip("/")
    link = gateway.create_account_link(
        partner.stripe_account_id,
        refresh_url=base + (refresh_path or f"/office/partners/{partner.id}/onboarding"),
        return_url=base + (return_path or f"/office/partners/{partner.id}"))
    return link.url


def account_is_ready(account):
    """Stripe says transfers can go to this account: payouts enabled and the transfers capability active."""
    capabilities = account.get("capabilities") or {}
    return bool(account.get("payouts_enabled")) and capabilities.get("transfers") == "active"


def apply_account_state(partner, account, *, by):
    """Move the partner to READY (releasing its waiting payouts) or back to ONBOARDING, as the account says."""
    ready = account_is_ready(account)
    if ready and partner.account_status != AccountStatus.READY:
        record(by, "referrals.account_ready", partner, field="account_status", old=partner.account_status,
               new=AccountStatus.READY, detail={"account": partner.stripe_account_id})
        partner.account_status = AccountStatus.READY
        release_for_partner(partner, by=by)
    elif not ready and partner.account_status == AccountStatus.READY:
        record(by, "referrals.account_restricted", partner, field="account_status", old=AccountStatus.READY,
               new=AccountStatus.ONBOARDING, detail={"account": partner.stripe_account_id})
        partner.account_status = AccountStatus.ONBOARDING
    return partner


def refresh_account(partner, *, by):
    """Re-read the partner's connected account from Stripe and apply it (the office's "Check again")."""
    if not partner.stripe_account_id:
        raise TransitionNotAllowed("This partner has no connected account yet: start onboarding first.")
    account = gateway.retrieve_account(partner.stripe_account_id).to_dict()
    partner = db.session.scalars(select(Partner).where(Partner.id == partner.id).with_for_update()
                                 .execution_options(populate_existing=True)).one()
    return apply_account_state(partner, account, by=by)


def on_account_updated(account, *, by):
    """`account.updated`: the partner with this account, moved as the account says; [] if it is not a partner's."""
    partner = db.session.scalars(select(Partner).where(Partner.stripe_account_id == account["id"])
                                 .with_for_update().execution_options(populate_existing=True)).one_or_none()
    if partner is None:
        return []
    return [apply_account_state(partner, account, by=by)]


# --- Refunds and disputes ------------------------------------------------------------------------------

def on_refund(billing_record, *, event_id):
    """Money went back: reverse the fee in proportion (cumulative, so repeated events reverse nothing more)."""
    by = event_actor(event_id, "referral fee on refund")
    full = billing_record.status == BillingStatus.REFUNDED
    for payout in lock_payouts_of(billing_record):
        if payout.status in CLOSED:
            continue
        refunded = payout.amount_paid if full else billing_record.amount_refunded
        if refunded <= 0:
            continue  # nothing of this job's payment went back (yet)
        target = reversal_target(payout.amount, refunded=refunded, paid=payout.amount_paid)
        reverse_to(payout, target, reason="refund", by=by, cancel=full)


def on_dispute(billing_record, *, event_id):
    """A dispute opened: per the partner's policy, hold an untransferred payout, or reverse/cancel it."""
    by = event_actor(event_id, "referral fee on dispute")
    for payout in lock_payouts_of(billing_record):
        if payout.status in CLOSED:
            continue
        if payout.partner.dispute_policy == DisputePolicy.REVERSE:
            reverse_to(payout, payout.amount, reason="dispute", by=by, cancel=True)
        elif payout.status in (PayoutStatus.PENDING, PayoutStatus.FAILED):
            hold(payout, "dispute", by=by)  # the queued transfer task finds it held and does nothing
        else:  # already held (kept held while disputed), or paid: left alone until a refund says otherwise
            record(by, "referrals.dispute_noted", payout, job=payout.job,
                   detail={"payout_id": payout.id, "status": payout.status.value})


def on_dispute_decided(billing_record, *, won, event_id):
    """The bank decided. Won: a payout held for the dispute goes on (a hold period or a missing account still
    holds it). Lost: the money is gone, so the fee is too: cancelled before transfer, reversed after."""
    by = event_actor(event_id, f"referral fee on dispute {'won' if won else 'lost'}")
    for payout in lock_payouts_of(billing_record):
        if payout.status in CLOSED:
            continue  # reversed when the dispute opened (reverse policy): a win does not pay it again
        if not won:
            reverse_to(payout, payout.amount, reason="dispute-lost", by=by, cancel=True)
        elif payout.status == PayoutStatus.HELD:
            route(payout, by=by)


def reverse_to(payout, target, *, reason, by, cancel=False):
    """Bring the payout's reversed total up to `target`: a Stripe reversal if transferred, else a smaller payout."""
    if payout.stripe_transfer_id is None and payout.attempts > 0:
        found = find_transfer(payout)  # a transfer made before a crash saved its id
        if found is not None:
            mark_transferred(payout, found, by=by)
    step = target - payout.amount_reversed
    if payout.stripe_transfer_id is None:
        if step > 0:
            add_entry(payout, EntryKind.REVERSED, f"{reason}-to-{target}", amount=step,
                      detail={"reason": reason, "before_transfer": True})
            payout.amount_reversed = target
            record(by, "referrals.payout_reduced", payout, job=payout.job, field="amount_reversed",
                   old=target - step, new=target, detail={"payout_id": payout.id, "reason": reason})
        if cancel or payout.amount_reversed >= payout.amount:
            add_entry(payout, EntryKind.CANCELLED, reason)
            move(payout, PayoutStatus.CANCELLED, by=by, action="referrals.payout_cancelled", detail={"reason": reason})
        return
    if step <= 0:
        return
    reversal = gateway.create_transfer_reversal(
        payout.stripe_transfer_id, amount=step, metadata={"payout_id": str(payout.id), "reason": reason},
        key=f"payout-{payout.id}-reversal-to-{target}")
    add_entry(payout, EntryKind.REVERSED, f"{reason}-to-{target}", amount=step, stripe_id=reversal.id,
              detail={"reason": reason, "transfer_id": payout.stripe_transfer_id})
    payout.amount_reversed = target
    record(by, "referrals.transfer_reversed", payout, job=payout.job, field="amount_reversed", old=target - step,
           new=target, detail={"payout_id": payout.id, "reversal_id": reversal.id, "amount": step, "reason": reason})
    if payout.amount_reversed >= payout.amount:
        move(payout, PayoutStatus.REVERSED, by=by, action="referrals.payout_reversed", detail={"reason": reason})
