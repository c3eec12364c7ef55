"""Billing rules the web process uses: enqueueing triggers, sweeping lost ones, office retries."""
from datetime import timedelta

from flask import current_app
from rq import Retry
from sqlalchemy import select

from portal.audit.services import record
from portal.billing.models import BillingStatus, BillingTrigger, TriggerStatus
from portal.errors import ServiceError, TransitionNotAllowed
from portal.extensions import db
from portal.jobs.services import set_billing_status
from portal.queue import enqueue, enqueue_after_commit
from portal.timeutil import utcnow

PROCESS_TRIGGER = "portal.billing.tasks.process_billing_trigger"
def retry_policy():
    """RQ retries for transient failures: by default about a quarter of an hour before a person is asked."""
    intervals = [int(s) for s in current_app.config["BILLING_RETRY_SECONDS"].split(",")]
    return Retry(max=len(intervals), interval=intervals)
STUCK_AFTER = timedelta(minutes=15)


def enqueue_trigger(trigger, *, now=None):
    """Hand the trigger to the worker once this transaction commits."""
    trigger.enqueued_at = now or utcnow()
    enqueue_after_commit(db.session, PROCESS_TRIGGER, trigger.id, retry=retry_policy())


def sweep(now=None):
    """Re-enqueue every pending trigger that was never queued, or whose work got stuck or lost."""
    now = now or utcnow()
    stale = now - STUCK_AFTER
    triggers = db.session.scalars(
        select(BillingTrigger)
        .where(BillingTrigger.status == TriggerStatus.PENDING)
        .where((BillingTrigger.enqueued_at.is_(None)) | (BillingTrigger.enqueued_at < stale))
        .where((BillingTrigger.lease_until.is_(None)) | (BillingTrigger.lease_until < now))
        .with_for_update(skip_locked=True)
    ).all()
    for trigger in triggers:
        enqueue_trigger(trigger, now=now)
    db.session.commit()
    return triggers


def retry_trigger(trigger, *, by):
    """The office's "Retry now" on a failed trigger: a fresh round of attempts."""
    if trigger.status != TriggerStatus.FAILED:
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
    """Triggers whose attempts are exhausted or that failed permanently, oldest first."""
    return db.session.scalars(
        select(BillingTrigger).where(BillingTrigger.status == TriggerStatus.FAILED).order_by(BillingTrigger.id)
    ).all()


def run_now(dotted_name, *args):
    """For CLI commands: enqueue immediately (outside any request's transaction)."""
    return enqueue(dotted_name, *args)


# --- Office overrides (every one audited) ----------------------------------------------------------

SEND_BILL_EMAIL = "portal.billing.tasks.send_bill_email_task"
RESEND_BILL_EMAIL = "portal.billing.tasks.resend_bill_email_task"
PROCESS_BATCH = "portal.billing.tasks.process_billing_batch"
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

    if user.role not in STAFF_ROLES or not 0 < record_id <= 2**31 - 1:
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


def close_record(billing_record, status, *, by, reason):
    """End a record (void, no charge); the job goes back to not billed."""
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
    trigger = BillingTrigger(job=job, status=TriggerStatus.PENDING)
    db.session.add(trigger)
    db.session.flush()
    set_billing_status(job, BillingStatus.PENDING, by=by)
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

    for sibling in intent_for(billing_record).records:
        sibling.amount_paid = sibling.total
        record(by, "billing.paid_offline", sibling, job=sibling.job,
               detail={"method": method, "note": note, "amount": sibling.total})
        move_record(sibling, BillingStatus.PAID, commit=False, by=by)


def mark_no_charge(job, *, by, reason):
    """The office waives the charge: any unpaid bill is voided and the job needs nothing more."""
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError("Say why there is no charge.", {"reason": "required"})
    live = job.live_billing_record
    if live is not None:
        void_record(live, by=by, reason=f"No charge: {reason}")
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
    from portal.jobs.services import today_tz

    local = moment.astimezone(today_tz())
    if batching == Batching.WEEKLY:
        year, week, _ = local.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{local:%Y-%m}"


def open_batch(client, jobs, key, *, by):
    """A batch with a pending record per job, enqueued once this transaction commits."""
    from portal.billing.models import BillingBatch, BillingRecord, RecordKind

    batch = BillingBatch(client=client, period_key=key, status=TriggerStatus.PENDING)
    db.session.add(batch)
    for job in jobs:
        totals = job.totals
        db.session.add(BillingRecord(
            job=job, batch=batch, kind=RecordKind.INVOICE, status=BillingStatus.PENDING, live=True,
            auto_send=client.send_mode.value == "auto", currency=job.currency,
            subtotal=totals.subtotal, tax=totals.tax, total=totals.total,
        ))
        set_billing_status(job, BillingStatus.PENDING, by=by)
    db.session.flush()
    record(by, "billing.batch_opened", batch, detail={"batch_id": batch.id, "period": key,
                                                      "jobs": [job.number for job in jobs]})
    enqueue_after_commit(db.session, PROCESS_BATCH, batch.id, retry=retry_policy())
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
