"""Closeout to cash: turn a billing trigger into a customer who can pay, exactly once.

Each step saves what it learned before the next begins (Stripe ids the moment they are
known), so a retried or resumed trigger continues from its last saved step. Stripe writes
carry idempotency keys derived from the record and the step; after Stripe has forgotten a
key (24 h) a resumed trigger looks the object up by metadata instead of creating another.
"""
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from flask import current_app
from sqlalchemy import select, update

from portal.audit.services import Actor, record
from portal.billing import stripe_gateway as gateway
from portal.billing.models import (
    BillingRecord,
    BillingStatus,
    BillingTrigger,
    RecordKind,
    StripeTaxRate,
    TriggerStatus,
)
from portal.clients.models import Batching, BillingMode, SendMode
from portal.extensions import db
from portal.jobs.services import set_billing_status
from portal.money import format_money
from portal.timeutil import utcnow

WORKER = Actor.system("billing worker")
PAYMENT_LINK_MAX_LINES = 20  # Stripe's limit on a payment link's line items
RECORD_METADATA_KEY = "closeout_record_id"
BATCH_METADATA_KEY = "closeout_batch_id"


class BillingMismatch(gateway.StripeRefused):
    """Stripe's total disagrees with ours: never send a customer a wrong amount."""


def lease_length():
    """How long a claim lasts (BILLING_LEASE_SECONDS, five minutes by default)."""
    return timedelta(seconds=current_app.config.get("BILLING_LEASE_SECONDS", 300))


def claim(model, row_id):
    """Take the lease on a pending trigger or batch; None if it is finished or another worker holds it."""
    now = utcnow()
    claimed = db.session.execute(
        update(model)
        .where(model.id == row_id, model.status == TriggerStatus.PENDING)
        .where((model.lease_until.is_(None)) | (model.lease_until < now))
        .values(lease_until=now + lease_length(), attempts=model.attempts + 1)
        .returning(model.id)
    ).scalar()
    db.session.commit()
    return db.session.get(model, claimed) if claimed else None


def run(trigger):
    """Every step for one trigger; each commits its progress."""
    job = trigger.job
    prepare_proof(trigger)
    if job.client.batching != Batching.PER_JOB:
        finish(trigger)  # the batch run bills it with its period's other jobs
        return None
    billing_record = open_record(trigger)
    bill(billing_record)
    from portal.billing.emails import COLLECTABLE, send_bill_email

    # Still owed (a resumed trigger may find it overdue, or a payment from Stripe's email failed): our bill goes out.
    if billing_record.status in COLLECTABLE:
        send_bill_email(billing_record, by=WORKER)
    finish(trigger)
    return billing_record


def bill(billing_record):
    """Create (or find) the record's Stripe invoice or payment link, as the client's billing mode chose."""
    if billing_record.kind == RecordKind.INVOICE:
        bill_by_invoice(InvoiceIntent.for_record(billing_record))
    else:
        bill_by_payment_link(billing_record)


def prepare_proof(trigger):
    """Photos' web copies, then the proof-of-work PDF and its fingerprint, stored once."""
    from portal.billing.proof import store_proof
    from portal.photos.derivatives import ensure_derivatives

    for photo in trigger.job.photos:
        ensure_derivatives(photo)
    if trigger.proof_pdf_key is None:
        trigger.proof_pdf_key, trigger.proof_sha256 = store_proof(trigger)
        record(WORKER, "billing.proof_rendered", trigger, job=trigger.job,
               detail={"sha256": trigger.proof_sha256, "trigger_id": trigger.id})
        db.session.commit()


def finish(trigger):
    trigger.status = TriggerStatus.DONE
    trigger.finished_at = utcnow()
    trigger.lease_until = None
    trigger.last_error = None
    db.session.commit()


def open_record(trigger):
    """The job's live billing record for this trigger, created (status pending) if missing."""
    job = trigger.job
    live = job.live_billing_record
    if live is not None:
        return live
    from portal.referrals.attribution import referral_for_job

    client = job.client
    totals = job.totals
    billing_record = BillingRecord(
        job=job,
        trigger=trigger,
        kind=RecordKind.INVOICE if client.billing_mode == BillingMode.INVOICE else RecordKind.PAYMENT_LINK,
        status=BillingStatus.PENDING,
        live=True,
        auto_send=client.send_mode == SendMode.AUTO,
        currency=job.currency,
        subtotal=totals.subtotal,
        tax=totals.tax,
        total=totals.total,
        referral=referral_for_job(job),  # the partner is known from the moment the job is billed (issue 6)
    )
    db.session.add(billing_record)
    db.session.flush()
    record(WORKER, "billing.record_opened", billing_record, job=job,
           detail={"record_id": billing_record.id, "kind": billing_record.kind.value, "total": totals.total})
    db.session.commit()
    return billing_record


def is_resume(billing_record):
    """A trigger on its second or later attempt may have created objects whose ids we never saved."""
    return billing_record.trigger is not None and billing_record.trigger.attempts > 1


def record_metadata(billing_record):
    job = billing_record.job
    return {RECORD_METADATA_KEY: str(billing_record.id), "job_id": str(job.id), "job_number": job.number}


@dataclass
class InvoiceIntent:
    """One Stripe invoice to create: for a single job's record, or for a batch's records."""

    records: list
    key_prefix: str
    metadata: dict
    lookup: tuple  # (metadata key, value) identifying our invoice at Stripe
    resume: bool

    @property
    def jobs(self):
        return [r.job for r in self.records]

    @property
    def lead(self):
        return self.records[0]

    @property
    def expected_total(self):
        return sum(r.total for r in self.records)

    @classmethod
    def for_record(cls, billing_record):
        return cls([billing_record], f"record-{billing_record.id}", record_metadata(billing_record),
                   (RECORD_METADATA_KEY, str(billing_record.id)), is_resume(billing_record))

    @classmethod
    def for_batch(cls, batch):
        return cls([r for r in batch.records if r.live], f"batch-{batch.id}",
                   {BATCH_METADATA_KEY: str(batch.id), "period": batch.period_key},
                   (BATCH_METADATA_KEY, str(batch.id)), batch.attempts > 1)


def ensure_customer(client):
    """The client's Stripe customer, created once; its id is saved the moment it is known."""
    if client.stripe_customer_id:
        return client.stripe_customer_id
    emails = client.billing_emails or []
    customer = gateway.create_customer(
        name=client.name,
        email=emails[0] if emails else None,
        phone=client.phone,
        metadata={"closeout_client_id": str(client.id)},
        key=f"client-{client.id}-customer",
    )
    client.stripe_customer_id = customer.id
    record(WORKER, "client.stripe_customer_created", client, field="stripe_customer_id", new=customer.id)
    db.session.commit()
    return customer.id


def ensure_tax_rate(percent):
    """Our Stripe tax rate for this percentage, created once and kept."""
    key = f"{percent:f}" if isinstance(percent, Decimal) else str(percent)
    existing = db.session.scalar(select(StripeTaxRate).where(StripeTaxRate.percent == key))
    if existing is not None:
        return existing.stripe_tax_rate_id
    tax_rate = gateway.create_tax_rate(percentage=key, key=f"tax-rate-{key}")
    db.session.add(StripeTaxRate(percent=key, stripe_tax_rate_id=tax_rate.id))
    db.session.commit()
    return tax_rate.id


def line_description(line, currency, prefix=""):
    quantity = line.quantity.normalize()
    return f"{prefix}{line.description} ({quantity:f} {line.unit} × {format_money(line.unit_amount, currency)})"


def invoice_context(jobs):
    """Description and footer that give the customer the job's context on Stripe's invoice."""
    first = jobs[0]
    if len(jobs) == 1:
        where = first.site.address if first.site else first.client.address
        description = f"Job {first.number}: {first.scope}".strip()
        footer = f"Work at {where}, completed {first.completed_at:%Y-%m-%d}. Questions? Reply to our email."
    else:
        description = "Jobs " + ", ".join(job.number for job in jobs)
        footer = "One invoice for the jobs listed; each line starts with its job number."
    return description, f"{current_app.config['BUSINESS_NAME']}. {footer}"


def bill_by_invoice(intent):
    """Create the invoice, add one item per line, then finalize and send, or leave a draft."""
    jobs = intent.jobs
    client = jobs[0].client
    customer_id = ensure_customer(client)
    if intent.lead.stripe_invoice_id is None:
        invoice = gateway.find_invoice(customer_id, *intent.lookup) if intent.resume else None
        if invoice is None:
            description, footer = invoice_context(jobs)
            invoice = gateway.create_invoice(
                customer_id=customer_id, currency=intent.lead.currency, days_until_due=client.days_until_due,
                description=description, footer=footer, metadata=intent.metadata,
                key=f"{intent.key_prefix}-invoice",
            )
        for billing_record in intent.records:
            billing_record.stripe_invoice_id = invoice.id
            record(WORKER, "billing.stripe_invoice_created", billing_record, job=billing_record.job,
                   field="stripe_invoice_id", new=invoice.id)
        db.session.commit()
    invoice_id = intent.lead.stripe_invoice_id
    already_added = {gateway.metadata_of(item).get("line_item_id") for item in gateway.list_invoice_items(invoice_id)}
    for job in jobs:
        prefix = f"{job.number}: " if len(jobs) > 1 else ""
        for line in job.line_items:
            if str(line.id) in already_added:
                continue
            integral = line.quantity == line.quantity.to_integral_value()
            gateway.add_invoice_item(
                customer_id=customer_id, invoice_id=invoice_id, currency=intent.lead.currency,
                description=line_description(line, intent.lead.currency, prefix),
                quantity=int(line.quantity) if integral else None,
                unit_amount=line.unit_amount if integral else None,
                amount=None if integral else line.amount,
                tax_rate_id=ensure_tax_rate(line.tax_percent) if line.tax_amount else None,
                metadata={"line_item_id": str(line.id), "job_id": str(job.id)},
                key=f"{intent.key_prefix}-line-{line.id}",
            )
    invoice = gateway.retrieve_invoice(invoice_id)
    if invoice.total != intent.expected_total:
        raise BillingMismatch(f"Stripe's invoice total {invoice.total} differs from ours, {intent.expected_total}")
    if intent.lead.auto_send:
        send_invoice(intent)
    else:
        for billing_record in intent.records:
            advance_record(billing_record, BillingStatus.DRAFT)
        db.session.commit()


def send_invoice(intent):
    """Finalize and send the invoice; Stripe emails its hosted invoice page too."""
    invoice = gateway.retrieve_invoice(intent.lead.stripe_invoice_id)
    if invoice.status == "draft":
        invoice = gateway.finalize_invoice(invoice.id, key=f"{intent.key_prefix}-finalize")
    if invoice.status == "open":
        invoice = gateway.send_invoice(invoice.id, key=f"{intent.key_prefix}-send")
    due_at = datetime.fromtimestamp(invoice.due_date, timezone.utc) if invoice.due_date else None
    for billing_record in intent.records:
        billing_record.invoice_number = invoice.number
        billing_record.due_at = due_at
        advance_record(billing_record, BillingStatus.SENT, hosted_url=invoice.hosted_invoice_url)
    db.session.commit()


# The statuses the worker moves a record out of (to draft or sent); payment sync moves it from there on.
WORKER_MOVES_FROM = frozenset({BillingStatus.PENDING, BillingStatus.FAILED, BillingStatus.DRAFT})


def advance_record(billing_record, status, *, hosted_url=None):
    """The worker's move to draft or sent, unless payment sync has already moved the record on.

    Stripe emails a sent invoice itself, so the customer may pay (or dispute) before a killed worker's retry
    gets here; moving that record back to "sent" would hide the payment and email a bill for it (issue 8's
    model-based test found this). Checked under the row lock payment sync takes, so neither overwrites the other.
    """
    db.session.flush()
    db.session.refresh(billing_record, with_for_update=True)
    if billing_record.status in WORKER_MOVES_FROM:
        move_record(billing_record, status, hosted_url=hosted_url, commit=False)
    elif hosted_url and not billing_record.hosted_url:
        billing_record.hosted_url = hosted_url


def move_record(billing_record, status, *, hosted_url=None, commit=True, by=WORKER):
    """Set the record's status and mirror it on the job, with an audit entry."""
    if hosted_url:
        billing_record.hosted_url = hosted_url
    if billing_record.status != status:
        record(by, "billing.record_status", billing_record, job=billing_record.job, field="status",
               old=billing_record.status, new=status, detail={"record_id": billing_record.id})
        billing_record.status = status
    set_billing_status(billing_record.job, status, by=by)
    if commit:
        db.session.commit()


def payment_link_lines(job):
    """(name, amount) lines for a payment link: at most 20, tax as its own line, total exact to the cent."""
    currency = job.currency
    lines = [(line_description(line, currency), line.amount) for line in job.line_items]
    tax = job.totals.tax
    room = PAYMENT_LINK_MAX_LINES - (1 if tax else 0)
    if len(lines) > room:
        kept, rest = lines[: room - 1], lines[room - 1:]
        lines = kept + [(f"{len(rest)} more items (itemised on the proof-of-work PDF)", sum(a for _, a in rest))]
    lines = [(name, amount) for name, amount in lines if amount > 0] or [(f"Job {job.number}", 0)]
    if tax:
        lines.append(("Sales tax", tax))
    return lines


def bill_by_payment_link(billing_record):
    """Create the payment link for the job and store it; the email carries it to the customer."""
    job = billing_record.job
    if billing_record.stripe_payment_link_id is None:
        link = None
        if is_resume(billing_record):
            link = gateway.find_payment_link(RECORD_METADATA_KEY, str(billing_record.id))
        if link is None:
            link = gateway.create_payment_link(
                currency=billing_record.currency,
                lines=payment_link_lines(job),
                metadata=record_metadata(billing_record),
                confirmation_message=f"Thank you. Your payment for job {job.number} is received.",
                key=f"record-{billing_record.id}-link",
            )
        billing_record.stripe_payment_link_id = link.id
        billing_record.hosted_url = link.url
        record(WORKER, "billing.stripe_payment_link_created", billing_record, job=job,
               field="stripe_payment_link_id", new=link.id)
        db.session.commit()
    # Draft policy: the link exists but the customer hears nothing until the office approves it.
    status = BillingStatus.SENT if billing_record.auto_send else BillingStatus.DRAFT
    advance_record(billing_record, status, hosted_url=billing_record.hosted_url)
    db.session.commit()


def note_failure(trigger, error, *, final):
    """Record the attempt's error on the trigger; a final one needs a person ("Billing failed")."""
    db.session.rollback()
    trigger = db.session.get(BillingTrigger, trigger.id)
    trigger.last_error = str(error)[:2000]
    trigger.lease_until = None
    if final:
        trigger.status = TriggerStatus.FAILED
        trigger.finished_at = utcnow()
        job = trigger.job
        live = job.live_billing_record
        if live is not None and live.status == BillingStatus.PENDING:
            live.status = BillingStatus.FAILED
        set_billing_status(job, BillingStatus.FAILED, by=WORKER)
        record(WORKER, "billing.failed", trigger, job=job, detail={"error": trigger.last_error,
                                                                   "attempts": trigger.attempts})
    db.session.commit()


def run_batch(batch):
    """One invoice for the batch's jobs, each line prefixed with its job number."""
    intent = InvoiceIntent.for_batch(batch)
    for billing_record in intent.records:
        # The job's own trigger normally rendered its proof already; a batch billed at once may not wait.
        trigger = billing_record.trigger or billing_record.job.billing_triggers[-1]
        prepare_proof(trigger)
        billing_record.trigger = trigger
    db.session.commit()
    if intent.records:
        bill_by_invoice(intent)
        from portal.billing.emails import COLLECTABLE, send_bill_email

        if intent.lead.status in COLLECTABLE:
            send_bill_email(intent.lead, by=WORKER)
    batch.status = TriggerStatus.DONE
    batch.finished_at = utcnow()
    batch.lease_until = None
    batch.last_error = None
    db.session.commit()


def note_batch_failure(batch, error, *, final):
    """Record a batch attempt's error; a final one marks its jobs "Billing failed"."""
    from portal.billing.models import BillingBatch

    db.session.rollback()
    batch = db.session.get(BillingBatch, batch.id)
    batch.last_error = str(error)[:2000]
    batch.lease_until = None
    if final:
        batch.status = TriggerStatus.FAILED
        batch.finished_at = utcnow()
        for billing_record in batch.records:
            if billing_record.live and billing_record.status == BillingStatus.PENDING:
                billing_record.status = BillingStatus.FAILED
                set_billing_status(billing_record.job, BillingStatus.FAILED, by=WORKER)
        record(WORKER, "billing.batch_failed", batch, detail={"error": batch.last_error, "batch_id": batch.id})
    db.session.commit()
