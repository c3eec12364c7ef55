"""Billing rules the web process uses: enqueueing triggers, sweeping lost ones, office retries."""
import uuid
from datetime import timedelta

from flask import current_app
from rq import Retry
from rq.job import JobStatus
from sqlalchemy import select

from portal.audit.services import record
from portal.billing.models import BillingStatus, BillingTrigger, RecordKind, TriggerStatus
from portal.errors import ServiceError, TransitionNotAllowed
from portal.extensions import db, is_row_id
from portal.jobs.services import lock_job, set_billing_status, visible_jobs
from portal.queue import ACTIVE_STATUSES, enqueue, enqueue_after_commit, job_status
from portal.timeutil import utcnow

PROCESS_TRIGGER = "portal.billing.tasks.process_billing_trigger"
PROCESS_BATCH = "portal.billing.tasks.process_billing_batch"
def retry_policy():
    """RQ retries for transient failures: by default about a quarter of an hour before a person is asked."""
    intervals = [int(s) for s in current_app.config["BILLING_RETRY_SECONDS"].split(",")]
    return Retry(max=len(intervals), interval=intervals)
STUCK_AFTER = timedelta(minutes=15)


def enqueue_work(row, dotted_name, *, now=None):
    """Hand a trigger or batch to the worker once this transaction commits, under a job id we keep."""
    row.enqueued_at = now or utcnow()
    row.rq_job_id = f"{row.__tablename__}-{row.id}-{uuid.uuid4().hex[:12]}"
    enqueue_after_commit(db.session, dotted_name, row.id, retry=retry_policy(), job_id=row.rq_job_id)


def enqueue_trigger(trigger, *, now=None):
    """Hand the trigger to the worker once this transaction commits."""
    enqueue_work(trigger, PROCESS_TRIGGER, now=now)


def enqueue_batch(batch, *, now=None):
    enqueue_work(batch, PROCESS_BATCH, now=now)


def lost(row, now):
    """Pending work that no worker holds and that Redis no longer has queued, scheduled or running."""
    if row.lease_until is not None and row.lease_until >= now:
        return False
    if row.rq_job_id is None:
        return True
    status = job_status(row.rq_job_id)
    if status == JobStatus.STARTED and row.lease_until is not None:
        # Claimed, and the lease ran out mid-run: its worker died (SIGKILL, OOM, a lost machine). RQ keeps
        # saying "started" until the job's heartbeat expires and a worker's maintenance notices (minutes).
        return True
    return status not in ACTIVE_STATUSES


def sweep(now=None):
    """Re-enqueue every pending trigger or batch that Redis lost, never got, or whose job died."""
    from portal.billing.models import BillingBatch

    now = now or utcnow()
    swept = []
    for model, dotted_name in ((BillingTrigger, PROCESS_TRIGGER), (BillingBatch, PROCESS_BATCH)):
        pending = db.session.scalars(
            select(model).where(model.status == TriggerStatus.PENDING).with_for_update(skip_locked=True)
        ).all()
        for row in pending:
            if lost(row, now):
                enqueue_work(row, dotted_name, now=now)
                swept.append(row)
    db.session.commit()
    return swept


def retry_trigger(trigger, *, by):
    """The office's "Retry now" on a failed trigger: a fresh round of attempts."""
    if trigger.status != TriggerStatus.FAILED or trigger.job.billing_status != BillingStatus.FAILED:
        raise TransitionNotAllowed("Only a failed billing attempt can be retried.")
    trigger.status = TriggerStatus.PENDING
    trigger.attempts = 0
    trigger.finished_at = None
    trigger.lease_until = None
    live = trigger.job.live_billing_record
    if live is not None and live.status == BillingStatus.FAILED:
        live.status = BillingStatus.PENDING
    set_billing_status(trigger.job, BillingStatus.PENDING, by=by)
    record(by, "billing.retry_requested", trigger, job=trigger.job, detail={"trigger_id": trigger.id})
    enqueue_trigger(trigger)


def needs_attention():
    """Triggers whose attempts are exhausted or that failed permanently, oldest first.

    A failure the office settles another way (void, re-bill, no charge) is cancelled, so it leaves this list.
    """
    return db.session.scalars(
        select(BillingTrigger).where(BillingTrigger.status == TriggerStatus.FAILED).order_by(BillingTrigger.id)
    ).all()


def run_now(dotted_name, *args):
    """For CLI commands: enqueue immediately (outside any request's transaction)."""
    return enqueue(dotted_name, *args)


# --- Office overrides (every one audited) ----------------------------------------------------------

SEND_BILL_EMAIL = "portal.billing.tasks.send_bill_email_task"
RESEND_BILL_EMAIL = "portal.billing.tasks.resend_bill_email_task"
OPEN_STATUSES = (BillingStatus.SENT, BillingStatus.PROCESSING, BillingStatus.PAYMENT_FAILED, BillingStatus.OVERDUE)


def intent_for(billing_record):
    from portal.billing.pipeline import InvoiceIntent

    if billing_record.batch is not None:
        return InvoiceIntent.for_batch(billing_record.batch)
    return InvoiceIntent.for_record(billing_record)


def get_record_for(user, record_id):
    """A billing record, for staff only (404 otherwise, as for jobs)."""
    from flask import abort

    from portal.auth.models import STAFF_ROLES
    from portal.billing.models import BillingRecord

    if user.role not in STAFF_ROLES or not is_row_id(record_id):
        abort(404)
    billing_record = db.session.get(BillingRecord, record_id)
    if billing_record is None:
        abort(404)
    return billing_record


def approve_draft(billing_record, *, by):
    """"Approve & send": finalize and send the draft invoice, then email the customer."""
    from portal.billing.pipeline import send_invoice

    if billing_record.status != BillingStatus.DRAFT or not billing_record.live:
        raise TransitionNotAllowed("Only a draft invoice can be approved.")
    record(by, "billing.draft_approved", billing_record, job=billing_record.job,
           detail={"record_id": billing_record.id})
    if billing_record.kind == RecordKind.PAYMENT_LINK:
        from portal.billing.pipeline import move_record

        move_record(billing_record, BillingStatus.SENT, by=by)
    else:
        send_invoice(intent_for(billing_record))  # commits: Stripe has sent it, so we keep that fact
    enqueue_after_commit(db.session, SEND_BILL_EMAIL, intent_for(billing_record).lead.id)
    db.session.commit()


def void_record(billing_record, *, by, reason):
    """Void the invoice or deactivate the link; the job can then be edited and re-billed."""
    from portal.billing import stripe_gateway as gateway

    reason = (reason or "").strip()
    if not reason:
        raise ServiceError("Say why the bill is voided.", {"reason": "required"})
    if not billing_record.live:
        raise TransitionNotAllowed("This bill is already closed.")
    if billing_record.status != BillingStatus.FAILED:
        require_worker_idle(billing_record.job)
    if billing_record.status in (BillingStatus.PAID, BillingStatus.PARTIALLY_REFUNDED, BillingStatus.REFUNDED,
                                 BillingStatus.DISPUTED, BillingStatus.PROCESSING):
        raise TransitionNotAllowed("Money has moved on this bill; refund it in Stripe instead of voiding.")
    siblings = intent_for(billing_record).records
    if billing_record.stripe_invoice_id:
        invoice = gateway.retrieve_invoice(billing_record.stripe_invoice_id)
        if invoice.status == "draft":
            gateway.delete_draft_invoice(invoice.id)
        elif invoice.status == "open":
            gateway.void_invoice(invoice.id, key=f"invoice-{invoice.id}-void")
    if billing_record.stripe_payment_link_id:
        gateway.deactivate_payment_link(billing_record.stripe_payment_link_id,
                                        key=f"record-{billing_record.id}-deactivate")
    for sibling in siblings:
        close_record(sibling, BillingStatus.VOID, by=by, reason=reason)


def settle_failed_triggers(job):
    """A failure the office dealt with another way no longer needs a person, and must not be retried."""
    for trigger in job.billing_triggers:
        if trigger.status == TriggerStatus.FAILED:
            trigger.status = TriggerStatus.CANCELLED
            trigger.finished_at = utcnow()


def require_worker_idle(job):
    """Office overrides wait until the worker has finished with the job, or the two would race."""
    if any(t.status == TriggerStatus.PENDING for t in job.billing_triggers) or (
            job.live_billing_record is not None and job.live_billing_record.status == BillingStatus.PENDING):
        raise TransitionNotAllowed("Billing is in progress for this job; try again in a moment.")


def close_record(billing_record, status, *, by, reason):
    """End a record (void, no charge); the job goes back to not billed."""
    settle_failed_triggers(billing_record.job)
    record(by, "billing.record_closed", billing_record, job=billing_record.job, field="status",
           old=billing_record.status, new=status, detail={"record_id": billing_record.id, "reason": reason})
    billing_record.status = status
    billing_record.live = False
    billing_record.closed_at = utcnow()
    billing_record.closed_reason = reason
    set_billing_status(billing_record.job, BillingStatus.NOT_BILLED, by=by)


def rebill_job(job, *, by):
    """Bill a completed job again after its bill was voided: a new trigger through the same pipeline."""
    from portal.jobs.models import WorkStatus

    if job.work_status != WorkStatus.COMPLETED:
        raise TransitionNotAllowed("Complete the job before billing it.")
    if job.live_billing_record is not None:
        raise TransitionNotAllowed("This job already has a bill; void it first.")
    if any(t.status == TriggerStatus.PENDING for t in job.billing_triggers):
        raise TransitionNotAllowed("This job is already being billed.")
    if not job.line_items:
        raise TransitionNotAllowed("Add line items, or mark the job no charge.")
    from portal.clients.models import Batching

    settle_failed_triggers(job)
    trigger = BillingTrigger(job=job, status=TriggerStatus.PENDING)
    db.session.add(trigger)
    db.session.flush()
    waits_for_batch = job.client.batching != Batching.PER_JOB
    set_billing_status(job, BillingStatus.READY_TO_BILL if waits_for_batch else BillingStatus.PENDING, by=by)
    record(by, "billing.rebill_requested", trigger, job=job, detail={"trigger_id": trigger.id})
    enqueue_trigger(trigger)
    return trigger


def mark_paid_offline(billing_record, *, by, method, note=""):
    """Cash or check: Stripe marks the invoice paid out of band, or the link is deactivated."""
    from portal.billing import stripe_gateway as gateway

    if not billing_record.live or billing_record.status not in (BillingStatus.DRAFT,) + OPEN_STATUSES:
        raise TransitionNotAllowed("Only an unpaid bill can be marked paid.")
    if billing_record.stripe_invoice_id:
        invoice = gateway.retrieve_invoice(billing_record.stripe_invoice_id)
        if invoice.status == "draft":
            gateway.finalize_invoice(invoice.id, key=f"invoice-{invoice.id}-finalize")
        gateway.pay_invoice_out_of_band(invoice.id, key=f"invoice-{invoice.id}-paid-offline")
    elif billing_record.stripe_payment_link_id:
        gateway.deactivate_payment_link(billing_record.stripe_payment_link_id,
                                        key=f"record-{billing_record.id}-deactivate")
    from portal.billing.pipeline import move_record
    from portal.referrals.settlement import settle_referral_fee

    for sibling in intent_for(billing_record).records:
        sibling.amount_paid = sibling.total
        record(by, "billing.paid_offline", sibling, job=sibling.job,
               detail={"method": method, "note": note, "amount": sibling.total})
        move_record(sibling, BillingStatus.PAID, commit=False, by=by)
        # Paid is paid: the referring partner earns the fee, funded from the balance as there is no charge.
        settle_referral_fee(sibling, event_id=f"paid-offline-{sibling.id}", by=by)


def mark_no_charge(job, *, by, reason):
    """The office waives the charge: any unpaid bill is voided and the job needs nothing more."""
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError("Say why there is no charge.", {"reason": "required"})
    live = job.live_billing_record
    if live is not None:
        void_record(live, by=by, reason=f"No charge: {reason}")
    else:
        require_worker_idle(job)
    settle_failed_triggers(job)
    for trigger in job.billing_triggers:
        if trigger.status == TriggerStatus.PENDING:
            trigger.status = TriggerStatus.CANCELLED
            trigger.finished_at = utcnow()
    job.no_charge_reason = reason
    record(by, "billing.no_charge", job, job=job, detail={"reason": reason})
    set_billing_status(job, BillingStatus.NO_CHARGE, by=by)


def resend_email(billing_record, *, by):
    """Send the customer the bill email again."""
    from portal.billing.emails import COLLECTABLE

    if billing_record.status not in COLLECTABLE or not billing_record.live:
        raise TransitionNotAllowed("Only a sent, unpaid bill can be emailed again.")
    record(by, "email.resend_requested", billing_record, job=billing_record.job)
    enqueue_after_commit(db.session, RESEND_BILL_EMAIL, billing_record.id, by.label)


# --- Batches ---------------------------------------------------------------------------------------

def period_key(batching, moment):
    """The batch period a completion belongs to, in the business's calendar."""
    from portal.clients.models import Batching
    from portal.timeutil import business_zone

    local = moment.astimezone(business_zone())
    if batching == Batching.WEEKLY:
        year, week, _ = local.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{local:%Y-%m}"


def open_batch(client, jobs, key, *, by):
    """A batch with a pending record per job, enqueued once this transaction commits."""
    from portal.billing.models import BillingBatch, BillingRecord, RecordKind
    from portal.referrals.attribution import referral_for_job

    batch = BillingBatch(client=client, period_key=key, status=TriggerStatus.PENDING)
    db.session.add(batch)
    for job in jobs:
        totals = job.totals
        proved = [t for t in job.billing_triggers if t.proof_pdf_key is not None]
        db.session.add(BillingRecord(
            job=job, batch=batch, trigger=proved[-1] if proved else None,
            kind=RecordKind.INVOICE, status=BillingStatus.PENDING, live=True,
            auto_send=client.send_mode.value == "auto", currency=job.currency,
            subtotal=totals.subtotal, tax=totals.tax, total=totals.total,
            referral=referral_for_job(job),  # the partner is known from the moment the job is billed (issue 6)
        ))
        set_billing_status(job, BillingStatus.PENDING, by=by)
    db.session.flush()
    record(by, "billing.batch_opened", batch, detail={"batch_id": batch.id, "period": key,
                                                      "jobs": [job.number for job in jobs]})
    enqueue_batch(batch)
    return batch


def ready_jobs(client_id=None, job_ids=None):
    from portal.jobs.models import Job

    query = select(Job).where(Job.billing_status == BillingStatus.READY_TO_BILL).order_by(Job.completed_at, Job.id)
    if client_id is not None:
        query = query.where(Job.client_id == client_id)
    if job_ids is not None:
        query = query.where(Job.id.in_(job_ids))
    return db.session.scalars(query.with_for_update()).all()


def run_batches(*, by, now=None):
    """Bill every weekly or monthly client's ready jobs from periods that have ended: one invoice each."""
    from portal.clients.models import Batching

    now = now or utcnow()
    batches = []
    by_client_period = {}
    for job in ready_jobs():
        batching = job.client.batching
        if batching not in (Batching.WEEKLY, Batching.MONTHLY):
            continue
        key = period_key(batching, job.completed_at)
        if key == period_key(batching, now):
            continue  # the period is still open
        by_client_period.setdefault((job.client, key), []).append(job)
    for (client, key), jobs in by_client_period.items():
        from portal.billing.models import BillingBatch

        existing = db.session.scalar(select(BillingBatch).where(BillingBatch.client_id == client.id,
                                                                 BillingBatch.period_key == key))
        batches.append(open_batch(client, jobs, key if existing is None else f"{key}-late-{now:%Y%m%d%H%M%S}",
                                  by=by))
    db.session.commit()
    return batches


def bill_now(job_ids, *, by):
    """The office's "Bill now" on selected ready-to-bill jobs: one invoice per client."""
    jobs = ready_jobs(job_ids=job_ids)
    if not jobs:
        raise TransitionNotAllowed("None of those jobs is ready to bill.")
    by_client = {}
    for job in jobs:
        by_client.setdefault(job.client, []).append(job)
    now = utcnow()
    return [open_batch(client, client_jobs, f"manual-{now:%Y%m%d%H%M%S%f}", by=by)
            for client, client_jobs in by_client.items()]


# --- Office billing screens: retrying failed billing, and what needs a person ---------------------

def retry_job_billing(job, *, by):
    """The office's "Retry now" on a job whose billing failed: its batch, or its own trigger, tries again."""
    job = lock_job(job)
    # Only while the job still shows "Billing failed": a failure the office settled another way
    # (void, no charge, re-bill) must not come back to life and bill the customer.
    if job.billing_status != BillingStatus.FAILED:
        raise TransitionNotAllowed("This job's billing has not failed, so there is nothing to retry.")
    live = job.live_billing_record
    if live is not None and live.batch is not None:
        return retry_billing_batch(live.batch, by=by)
    trigger = job.billing_triggers[-1] if job.billing_triggers else None
    if trigger is None or trigger.status != TriggerStatus.FAILED:
        raise TransitionNotAllowed("This job has no failed billing attempt to retry.")
    retry_trigger(trigger, by=by)
    return trigger


def retry_billing_batch(batch, *, by):
    """"Retry now" on a failed batch: a fresh round of attempts at its one invoice."""
    from portal.billing.models import BillingBatch

    batch = db.session.scalars(select(BillingBatch).where(BillingBatch.id == batch.id).with_for_update()
                               .execution_options(populate_existing=True)).one()
    if batch.status != TriggerStatus.FAILED:
        raise TransitionNotAllowed("Only a failed batch can be retried.")
    failed = [r for r in batch.records if r.live and r.status == BillingStatus.FAILED]
    if not failed:
        raise TransitionNotAllowed("Every bill in this batch was closed; there is nothing left to retry.")
    batch.status = TriggerStatus.PENDING
    batch.attempts = 0
    batch.finished_at = None
    batch.lease_until = None
    for billing_record in failed:
        billing_record.status = BillingStatus.PENDING
        set_billing_status(billing_record.job, BillingStatus.PENDING, by=by)
        record(by, "billing.retry_requested", batch, job=billing_record.job, detail={"batch_id": batch.id})
    enqueue_batch(batch)
    return batch


class BillingAttention:
    """What the Needs attention page lists: failed billing, and billing pending for too long."""

    def __init__(self, failed_triggers, failed_batches, stuck_triggers, stuck_batches, unconfirmed_emails):
        self.failed_triggers = failed_triggers
        self.failed_batches = failed_batches
        self.stuck_triggers = stuck_triggers
        self.stuck_batches = stuck_batches
        self.unconfirmed_emails = unconfirmed_emails

    def __bool__(self):
        return bool(self.failed_triggers or self.failed_batches or self.stuck_triggers or self.stuck_batches
                    or self.unconfirmed_emails)


def billing_attention(now=None):
    """Billing that failed and still shows so, and triggers or batches pending for over 15 minutes."""
    from portal.billing.emails import unconfirmed_emails
    from portal.billing.models import BillingBatch, BillingRecord

    now = now or utcnow()
    stale = now - STUCK_AFTER
    failed_triggers = needs_attention()
    failed_batches = db.session.scalars(
        select(BillingBatch).where(BillingBatch.status == TriggerStatus.FAILED)
        .where(BillingBatch.records.any(BillingRecord.live.is_(True) & (BillingRecord.status == BillingStatus.FAILED)))
        .order_by(BillingBatch.id)).all()
    stuck = {}
    for model in (BillingTrigger, BillingBatch):
        # A worker holding the lease is still at it; anything else this old was lost or is failing slowly.
        stuck[model] = db.session.scalars(
            select(model).where(model.status == TriggerStatus.PENDING, model.created_at < stale)
            .where(model.lease_until.is_(None) | (model.lease_until < now))
            .order_by(model.id)).all()
    return BillingAttention(failed_triggers, failed_batches, stuck[BillingTrigger], stuck[BillingBatch],
                            unconfirmed_emails(now))


def ready_to_bill_by_client(user):
    """Completed jobs waiting for their batch, as (client, jobs) pairs by client name, oldest completion first."""
    from sqlalchemy.orm import selectinload

    from portal.jobs.models import Job

    jobs = db.session.scalars(
        visible_jobs(user).options(selectinload(Job.client), selectinload(Job.site), selectinload(Job.line_items))
        .where(Job.billing_status == BillingStatus.READY_TO_BILL).order_by(Job.completed_at, Job.id)).all()
    by_client = {}
    for job in jobs:
        by_client.setdefault(job.client, []).append(job)
    return sorted(by_client.items(), key=lambda pair: (pair[0].name.lower(), pair[0].id))
