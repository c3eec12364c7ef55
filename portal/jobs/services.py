"""The rules of a job: who may see it, what may change, and completing it."""
from datetime import datetime, time, timedelta

from flask import abort, current_app
from sqlalchemy import or_, select
from sqlalchemy.orm import selectinload

from portal.audit.services import record
from portal.auth.models import Role
from portal.billing.models import BILLED_STATUSES, BillingStatus, BillingTrigger, TriggerStatus
from portal.clients.models import Batching
from portal.errors import ServiceError, TransitionNotAllowed, Unprocessable
from portal.extensions import db
from portal.jobs.models import Job, JobLineItem, LineItemTemplate, Note, WorkStatus, job_assignments
from portal.money import MoneyError, line_amount, line_tax, parse_amount, parse_quantity
from portal.timeutil import utcnow

NOTE_MAX_CHARS = 5000


def visible_jobs(user):
    """A select of the jobs this user may see: crew their assigned jobs, staff all, partners none."""
    query = select(Job)
    if user.role == Role.CREW:
        return query.join(job_assignments).where(job_assignments.c.user_id == user.id)
    if user.role in (Role.OFFICE, Role.OWNER):
        return query
    return query.where(False)


def get_job_for(user, job_id):
    """The job, if this user may see it; 404 otherwise, so ids of others' jobs leak nothing."""
    job = db.session.scalar(visible_jobs(user).where(Job.id == job_id))
    if job is None:
        abort(404)
    return job


def crew_jobs(user, today, days_ahead=7):
    """A crew member's open jobs for today and the coming days, plus today's completed ones."""
    start = datetime.combine(today, time.min, tzinfo=today_tz())
    end = start + timedelta(days=days_ahead + 1)
    query = (
        visible_jobs(user)
        .options(selectinload(Job.site), selectinload(Job.client))
        .where(
            or_(
                Job.work_status != WorkStatus.COMPLETED,
                Job.completed_at >= start,
            ),
            or_(Job.scheduled_start.is_(None), Job.scheduled_start < end),
        )
        .order_by(Job.scheduled_start.nulls_last(), Job.id)
    )
    return db.session.scalars(query).all()


def today_tz():
    from zoneinfo import ZoneInfo

    return ZoneInfo(current_app.config["BUSINESS_TIMEZONE"])


def assign_number(job):
    """Job numbers are derived from the id so that they never collide between processes."""
    db.session.flush()
    job.number = f"J-{job.id:05d}"


def create_job(client, *, by, site=None, scope="", customer_notes="", external_ref=None,
               scheduled_start=None, scheduled_end=None, crew=()):
    """A new scheduled job for a client."""
    if site is not None and site.client_id != client.id:
        raise Unprocessable("That site belongs to another client.", {"site_id": "not a site of this client"})
    job = Job(
        client=client,
        site=site,
        scope=scope,
        customer_notes=customer_notes,
        external_ref=external_ref or None,
        scheduled_start=scheduled_start,
        scheduled_end=scheduled_end,
        currency=client.currency,
        crew=list(crew),
    )
    db.session.add(job)
    assign_number(job)
    record(by, "job.created", job, job=job, detail={"number": job.number, "external_ref": job.external_ref})
    return job


def require_crew_editable(job):
    """Crews change a job only until it is completed."""
    if job.work_status == WorkStatus.COMPLETED:
        raise TransitionNotAllowed("This job is completed; ask the office to reopen it.")


def require_items_editable(job, by):
    """Line items change until the job is billed; crews only until it is completed."""
    if by.user is not None and by.user.role == Role.CREW:
        require_crew_editable(job)
    if job.billing_status in BILLED_STATUSES:
        raise TransitionNotAllowed("This job has been billed; void the bill before changing its items.")


def mark_started(job, by):
    """The first piece of work on a scheduled job moves it to in progress."""
    if job.work_status == WorkStatus.SCHEDULED:
        job.work_status = WorkStatus.IN_PROGRESS
        record(by, "job.status_changed", job, job=job, field="work_status",
               old=WorkStatus.SCHEDULED, new=WorkStatus.IN_PROGRESS)


def add_note(job, body, *, by):
    """Append a note to the job."""
    if by.user is not None and by.user.role == Role.CREW:
        require_crew_editable(job)
    body = (body or "").strip()
    if not body:
        raise ServiceError("Write something first.", {"body": "required"})
    if len(body) > NOTE_MAX_CHARS:
        raise Unprocessable(f"Notes are limited to {NOTE_MAX_CHARS} characters.", {"body": "too long"})
    note = Note(job=job, body=body, author=by.user)
    db.session.add(note)
    db.session.flush()
    mark_started(job, by)
    record(by, "note.added", note, job=job, new=body)
    return note


def tax_percent_for(job, taxable):
    if not taxable or job.client.tax_exempt:
        return 0
    return current_app.config["SALES_TAX_PERCENT"]


def add_line_item(job, *, by, template=None, description=None, quantity="1", unit_amount=None,
                  unit=None, taxable=None):
    """Add a line from a template or a custom one; amount and tax are rounded here, once."""
    require_items_editable(job, by)
    fields = {}
    try:
        quantity = parse_quantity(quantity)
    except MoneyError as error:
        fields["quantity"] = str(error)
    if template is not None:
        if not template.active:
            fields["template_id"] = "this template is retired"
        if template.currency != job.currency:
            fields["template_id"] = f"template is priced in {template.currency.upper()}, the job in {job.currency.upper()}"
        description = description or template.name
        unit = unit or template.unit
        unit_amount = template.unit_amount if unit_amount is None else unit_amount
        taxable = template.taxable if taxable is None else taxable
    description = (description or "").strip()
    if not description:
        fields["description"] = "required"
    if unit_amount is None:
        fields["unit_amount"] = "required"
    else:
        try:
            unit_amount = parse_amount(unit_amount)
        except MoneyError as error:
            fields["unit_amount"] = str(error)
    if fields:
        raise Unprocessable("Check the line item.", fields)
    tax_percent = tax_percent_for(job, bool(taxable))
    amount = line_amount(quantity, unit_amount)
    item = JobLineItem(
        job=job,
        template=template,
        description=description[:500],
        unit=(unit or "each")[:20],
        quantity=quantity,
        unit_amount=unit_amount,
        taxable=bool(taxable),
        tax_percent=tax_percent,
        amount=amount,
        tax_amount=line_tax(amount, tax_percent),
    )
    db.session.add(item)
    db.session.flush()
    mark_started(job, by)
    record(by, "line_item.added", item, job=job,
           new=f"{quantity} × {unit_amount} = {amount} (+{item.tax_amount} tax): {item.description}")
    return item


def update_line_item(item, *, by, quantity=None, unit_amount=None, description=None):
    """Change a line's quantity, price or description and re-round it."""
    job = item.job
    require_items_editable(job, by)
    fields, changes = {}, {}
    if quantity is not None:
        try:
            changes["quantity"] = (item.quantity, parse_quantity(quantity))
        except MoneyError as error:
            fields["quantity"] = str(error)
    if unit_amount is not None:
        try:
            changes["unit_amount"] = (item.unit_amount, parse_amount(unit_amount))
        except MoneyError as error:
            fields["unit_amount"] = str(error)
    if description is not None:
        if not description.strip():
            fields["description"] = "required"
        changes["description"] = (item.description, description.strip()[:500])
    if fields:
        raise Unprocessable("Check the line item.", fields)
    for field, (old, new) in changes.items():
        if old != new:
            setattr(item, field, new)
            record(by, "line_item.changed", item, job=job, field=field, old=old, new=new)
    item.amount = line_amount(item.quantity, item.unit_amount)
    item.tax_amount = line_tax(item.amount, item.tax_percent)
    return item


def remove_line_item(item, *, by):
    """Take a line off the job."""
    job = item.job
    require_items_editable(job, by)
    record(by, "line_item.removed", item, job=job, old=f"{item.quantity} × {item.unit_amount}: {item.description}")
    job.line_items.remove(item)
    db.session.delete(item)


def active_templates(currency=None):
    query = select(LineItemTemplate).where(LineItemTemplate.active.is_(True)).order_by(LineItemTemplate.name)
    if currency:
        query = query.where(LineItemTemplate.currency == currency)
    return db.session.scalars(query).all()


def lock_job(job):
    """Re-read the job under a row lock so that two completions cannot both pass the checks."""
    return db.session.scalars(select(Job).where(Job.id == job.id).with_for_update().execution_options(populate_existing=True)).one()


def complete_job(job, *, by, no_charge_reason=None):
    """Complete the job and, in the same transaction, record its billing trigger (the outbox)."""
    job = lock_job(job)
    if job.work_status == WorkStatus.COMPLETED:
        raise TransitionNotAllowed("This job is already completed.")
    if by.user is not None and by.user.role == Role.CREW and by.user not in job.crew:
        raise TransitionNotAllowed("Only the assigned crew can complete this job.")
    if not job.line_items and not job.client.allow_no_charge:
        raise Unprocessable("Add at least one line item: this client's jobs are not no-charge.",
                            {"line_items": "required"})
    previous = job.work_status
    job.work_status = WorkStatus.COMPLETED
    job.completed_at = utcnow()
    job.completed_by = by.user
    record(by, "job.completed", job, job=job, field="work_status", old=previous, new=WorkStatus.COMPLETED,
           detail={"subtotal": job.totals.subtotal, "tax": job.totals.tax, "total": job.totals.total,
                   "currency": job.currency})
    if not job.line_items:
        set_billing_status(job, BillingStatus.NO_CHARGE, by=by)
        job.no_charge_reason = (no_charge_reason or "Completed with no line items").strip()
        return job
    trigger = BillingTrigger(job=job, status=TriggerStatus.PENDING)
    db.session.add(trigger)
    waits_for_batch = job.client.batching != Batching.PER_JOB
    set_billing_status(job, BillingStatus.READY_TO_BILL if waits_for_batch else BillingStatus.PENDING, by=by)
    db.session.flush()
    record(by, "billing.triggered", trigger, job=job, detail={"trigger_id": trigger.id})
    return job


def reopen_job(job, *, by, reason):
    """Office reopens a completed job that is not billed yet; its pending trigger is cancelled."""
    job = lock_job(job)
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError("Say why the job is reopened.", {"reason": "required"})
    if job.work_status != WorkStatus.COMPLETED:
        raise TransitionNotAllowed("Only a completed job can be reopened.")
    if job.live_billing_record is not None:
        raise TransitionNotAllowed("This job has been billed; void the bill before reopening it.")
    for trigger in job.billing_triggers:
        if trigger.status == TriggerStatus.PENDING:
            trigger.status = TriggerStatus.CANCELLED
            trigger.finished_at = utcnow()
            record(by, "billing.trigger_cancelled", trigger, job=job, detail={"trigger_id": trigger.id})
    job.work_status = WorkStatus.IN_PROGRESS
    job.completed_at = None
    job.completed_by = None
    job.no_charge_reason = None
    record(by, "job.reopened", job, job=job, field="work_status", old=WorkStatus.COMPLETED,
           new=WorkStatus.IN_PROGRESS, detail={"reason": reason})
    set_billing_status(job, BillingStatus.NOT_BILLED, by=by)
    return job


def set_billing_status(job, status, *, by):
    """Change the job's billing status, with an audit entry."""
    if job.billing_status != status:
        record(by, "billing.status_changed", job, job=job, field="billing_status", old=job.billing_status, new=status)
        job.billing_status = status
