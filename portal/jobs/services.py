"""The rules of a job: who may see it, what may change, and completing it."""
from datetime import datetime, time, timedelta, timezone

from flask import abort, current_app
from sqlalchemy import or_, select
from sqlalchemy.orm import selectinload

from portal.audit.services import record
from portal.auth.models import Role, User
from portal.billing.models import BILLED_STATUSES, BillingStatus, BillingTrigger, TriggerStatus
from portal.clients.models import Batching, Client
from portal.errors import ServiceError, TransitionNotAllowed, Unprocessable
from portal.extensions import db, is_row_id
from portal.jobs.models import Job, JobLineItem, LineItemTemplate, Note, WorkStatus, job_assignments
from portal.money import MoneyError, line_amount, line_tax, parse_amount, parse_quantity
from portal.timeutil import business_zone, utcnow

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
    if not is_row_id(job_id):
        abort(404)
    job = db.session.scalar(visible_jobs(user).where(Job.id == job_id))
    if job is None:
        abort(404)
    return job


def crew_jobs(user, today, days_ahead=7):
    """A crew member's open jobs for today and the coming days, plus today's completed ones."""
    start = datetime.combine(today, time.min, tzinfo=business_zone())
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


def add_line_item(job, *, by, start_work=True, **line):
    """Add a line from a template or a custom one; amount and tax are rounded here, once.

    With start_work=False (a line priced from a ticket or quote) a scheduled job stays scheduled.
    """
    require_items_editable(job, by)
    item = price_line_item(job, **line)
    db.session.add(item)
    db.session.flush()
    if start_work:
        mark_started(job, by)
    record(by, "line_item.added", item, job=job,
           new=f"{item.quantity} × {item.unit_amount} = {item.amount} (+{item.tax_amount} tax): {item.description}")
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
    from portal.billing.services import enqueue_trigger  # billing builds on jobs, not the other way round

    enqueue_trigger(trigger)
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


# --- Office: scheduling, editing, assigning and finding jobs -------------------------------------

def assignable_crew():
    """Active crew members, by name: the people a job can be assigned to."""
    return db.session.scalars(
        select(User).where(User.role == Role.CREW, User.active.is_(True)).order_by(User.name, User.id)
    ).all()


def require_assignable(users):
    """Refuse anyone who is not an active crew member."""
    refused = [user.name for user in users if user.role != Role.CREW or not user.active]
    if refused:
        raise Unprocessable(f"Only active crew members can be assigned: {', '.join(refused)}.", {"crew": "not crew"})


def require_valid_schedule(scheduled_start, scheduled_end):
    """The end of a visit, when given, comes after its start, and needs one."""
    if scheduled_end is not None and scheduled_start is None:
        raise Unprocessable("Set the start before the end.", {"scheduled_start": "required with an end"})
    if scheduled_end is not None and scheduled_end <= scheduled_start:
        raise Unprocessable("The visit must end after it starts.", {"scheduled_end": "before the start"})


def require_unique_external_ref(client, external_ref, job=None):
    """One job per ticket id of another system, per client (the uq_jobs_client_external_ref constraint)."""
    if not external_ref:
        return
    query = select(Job.number).where(Job.client_id == client.id, Job.external_ref == external_ref)
    if job is not None:
        query = query.where(Job.id != job.id)
    taken_by = db.session.scalar(query)
    if taken_by is not None:
        raise Unprocessable(f"Job {taken_by} already has the reference {external_ref}.", {"external_ref": "taken"})


def schedule_job(client, *, by, site=None, crew=(), scope="", customer_notes="", external_ref=None,
                 scheduled_start=None, scheduled_end=None):
    """The office books a job: checks schedule, reference and crew, then create_job."""
    external_ref = (external_ref or "").strip() or None
    require_valid_schedule(scheduled_start, scheduled_end)
    require_unique_external_ref(client, external_ref)
    require_assignable(crew)
    return create_job(client, by=by, site=site, scope=(scope or "").strip(),
                      customer_notes=(customer_notes or "").strip(), external_ref=external_ref,
                      scheduled_start=scheduled_start, scheduled_end=scheduled_end, crew=crew)


def assign_crew(job, users, *, by):
    """Set who works the job; office may reassign at any stage, audited as one change."""
    require_assignable(users)
    old = sorted(job.crew, key=lambda user: (user.name, user.id))
    new = sorted(set(users), key=lambda user: (user.name, user.id))
    if [user.id for user in old] != [user.id for user in new]:
        job.crew = new
        record(by, "job.crew_assigned", job, job=job, field="crew",
               old=", ".join(user.name for user in old), new=", ".join(user.name for user in new))
    return job


JOB_EDITABLE_FIELDS = ("client", "site", "scope", "customer_notes", "external_ref", "scheduled_start", "scheduled_end")


def update_job(job, *, by, crew=None, **fields):
    """Office edits a job's details (and crew, when given), one audit entry per changed field."""
    unknown = set(fields) - set(JOB_EDITABLE_FIELDS)
    if unknown:
        raise TypeError(f"not editable job fields: {', '.join(sorted(unknown))}")
    for text_field in ("scope", "customer_notes"):
        if text_field in fields:
            fields[text_field] = (fields[text_field] or "").strip()
    if "external_ref" in fields:
        fields["external_ref"] = (fields["external_ref"] or "").strip() or None
    client = fields.get("client", job.client)
    site = fields.get("site", job.site)
    if client.id != job.client_id and (job.line_items or job.work_status == WorkStatus.COMPLETED):
        # The job's currency and its lines' tax follow the client; moving priced work would change them.
        raise TransitionNotAllowed("This job has line items or is completed; it cannot move to another client.",
                                   {"client_id": "locked"})
    if site is not None and site.client_id != client.id:
        raise Unprocessable("That site belongs to another client.", {"site_id": "not a site of this client"})
    require_valid_schedule(fields.get("scheduled_start", job.scheduled_start),
                           fields.get("scheduled_end", job.scheduled_end))
    require_unique_external_ref(client, fields.get("external_ref", job.external_ref), job)
    for field, value in fields.items():
        old = getattr(job, field)
        if old != value:
            setattr(job, field, value)
            record(by, "job.updated", job, job=job, field=field, old=_job_audit_text(old), new=_job_audit_text(value))
    if "client" in fields:
        job.currency = client.currency
    if crew is not None:
        assign_crew(job, crew, by=by)
    return job


def _job_audit_text(value):
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    return getattr(value, "name", value)


def search_jobs(user, *, work_status=None, billing_status=None, client_id=None, crew_id=None,
                scheduled_from=None, scheduled_before=None, text=None, condition=None, page=1, per_page=50):
    """One page of the jobs this user may see, filtered, by scheduled start, with what a row shows loaded."""
    query = visible_jobs(user).options(
        selectinload(Job.client), selectinload(Job.site), selectinload(Job.crew), selectinload(Job.line_items)
    )
    if work_status is not None:
        query = query.where(Job.work_status == work_status)
    if billing_status is not None:
        query = query.where(Job.billing_status == billing_status)
    if client_id is not None:
        query = query.where(Job.client_id == client_id)
    if crew_id is not None:
        query = query.where(Job.crew.any(User.id == crew_id))
    if scheduled_from is not None:
        query = query.where(Job.scheduled_start >= scheduled_from)
    if scheduled_before is not None:
        query = query.where(Job.scheduled_start < scheduled_before)
    if condition is not None:  # a dashboard figure's jobs (dashboard.services.figure_jobs_condition)
        query = query.where(condition)
    text = (text or "").strip()
    if text:
        # Bound parameters with LIKE wildcards escaped: the words are searched for, never run.
        query = query.where(or_(
            Job.number.icontains(text, autoescape=True),
            Job.scope.icontains(text, autoescape=True),
            Job.external_ref.icontains(text, autoescape=True),
            Job.client.has(Client.name.icontains(text, autoescape=True)),
        ))
    query = query.order_by(Job.scheduled_start.nulls_last(), Job.id)
    return db.paginate(query, page=page, per_page=per_page, error_out=False)


def get_line_item_for(user, job_id, item_id):
    """A line item of a job this user may see; 404 otherwise, also for another job's line."""
    job = get_job_for(user, job_id)
    item = next((line for line in job.line_items if line.id == item_id), None)
    if item is None:
        abort(404)
    return item


# --- Pricing a job before work starts (JSON API: jobs created with their lines) -----------------

def price_line_item(job, *, template=None, description=None, quantity="1", unit_amount=None, unit=None,
                    taxable=None):
    """A new, unsaved line for the job: validated, then amount and tax rounded once."""
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
    return JobLineItem(
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


def add_planned_line_item(job, *, by, **line):
    """A line priced before work starts (from a ticket or a quote): the job stays scheduled."""
    return add_line_item(job, by=by, start_work=False, **line)


# --- Crew: line items picked from the price list -------------------------------------------------

def add_line_item_from_template(job, *, by, template_id, quantity="1"):
    """Add a line picked from an active template of the job's currency, with the quantity typed on site."""
    require_items_editable(job, by)
    try:
        template_id = int(template_id)
    except (TypeError, ValueError):
        template_id = 0
    template = db.session.get(LineItemTemplate, template_id) if is_row_id(template_id) else None
    if template is None or not template.active or template.currency != job.currency:
        raise Unprocessable("Pick an item from the list.", {"template_id": "required"})
    return add_line_item(job, by=by, template=template, quantity=quantity)
