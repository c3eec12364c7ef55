"""Reminders (dunning, issue 7): the pay link again, on each client's schedule, once per step.

Policy: a client lists day offsets from the due date (`[-3, 0, 7, 14]`: three days before, on the
day, a week and two weeks after) and a limit on automatic reminders per bill; the office can pause
them per client. Days are the business's calendar days (BUSINESS_TIMEZONE), not UTC's.

The run (hourly, `flask reminders run`) sends a bill at most its *current* step: the latest offset
whose day has come. Steps missed while the cron was down are not sent in a burst, and a step whose
day is not after the day of the last email about the bill is skipped, so a customer never gets two
emails about one bill on one day (nor a "due in 3 days" the day the bill arrived).

Once per step: the reminder is a `customer_emails` row (kind `reminder`, `reminder_step` = the
offset), unique per bill and step, claimed and committed before SMTP is spoken to, like the bill
email (`portal/billing/emails.py`). The status is re-checked under the record's row lock right
before the claim, the same lock payment sync takes, so a bill paid a moment ago gets nothing.
A batch invoice is one bill: its reminders hang on its first live record, as its bill email does.
"""
import re
from dataclasses import dataclass, field
from datetime import timedelta

from email.utils import make_msgid
from flask import current_app, render_template
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from portal.audit.services import Actor, record, record_changes
from portal.billing.emails import (COLLECTABLE, AddressesRefused, Bill, MailRefused, MailUnavailable, bill_anchor,
                                   bill_subject, claim_email, customer_message, deliver_claimed, job_summary, local_date,
                                   mail_domain, pay_link_of, recipients_for, records_on_bill)
from portal.billing.models import BillingRecord, CustomerEmail, EmailKind, RecordKind
from portal.clients.models import Client
from portal.errors import TransitionNotAllowed, Unprocessable
from portal.extensions import db
from portal.jobs.models import Job
from portal.money import format_money
from portal.queue import enqueue_after_commit
from portal.timeutil import day_end_utc, day_start_utc, to_business_time, utcnow

# Offsets the office may choose, in days from the due date.
EARLIEST_OFFSET = -60
LATEST_OFFSET = 365
MAX_STEPS = 10
MAX_LIMIT = 10
SEND_MANUAL_REMINDER = "portal.reminders.tasks.send_manual_reminder"
SCHEDULER = Actor.system("reminder run")
# The hourly run waits for the business's morning, so a reminder does not arrive at midnight.
SEND_FROM_HOUR = 8


# --- Policy --------------------------------------------------------------------------------------

def parse_offsets(value):
    """Day offsets from text ("-3, 0, 7, 14") or a list, sorted and without repeats; Unprocessable if bad."""
    if isinstance(value, str):
        # A typographic minus (−) is what some phones type for "-".
        items = [item for item in re.split(r"[,;\s]+", value.replace("\u2212", "-")) if item]
    else:
        items = list(value or ())
    offsets = set()
    for item in items:
        try:
            offset = int(item)
        except (TypeError, ValueError):
            raise Unprocessable(f"“{item}” is not a whole number of days.", {"reminder_offsets": "invalid"}) from None
        if isinstance(item, bool) or not EARLIEST_OFFSET <= offset <= LATEST_OFFSET:
            raise Unprocessable(f"Reminder days must be from {EARLIEST_OFFSET} (before the due date) to "
                                f"{LATEST_OFFSET} (after it).", {"reminder_offsets": "out of range"})
        offsets.add(offset)
    if not offsets:
        raise Unprocessable("Add at least one reminder day, or pause reminders.", {"reminder_offsets": "required"})
    if len(offsets) > MAX_STEPS:
        raise Unprocessable(f"At most {MAX_STEPS} reminder days.", {"reminder_offsets": "too many"})
    return sorted(offsets)


def parse_limit(value):
    """The most automatic reminders per bill: a whole number from 1 to MAX_LIMIT."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise Unprocessable(f"Send at most a whole number from 1 to {MAX_LIMIT} reminders; pause reminders "
                            "to send none.", {"reminder_limit": "out of range"})
    return value


def set_reminder_policy(client, *, by, offsets=None, limit=None, paused=None):
    """Change a client's reminder days, limit or pause; one audit entry per changed field."""
    clean, errors = {}, {}
    for name, value, parse in (("reminder_offsets", offsets, parse_offsets), ("reminder_limit", limit, parse_limit),
                               ("reminders_paused", paused, bool)):
        if value is None:
            continue
        try:
            clean[name] = parse(value)
        except Unprocessable as error:
            errors[name] = error.message
    if errors:
        raise Unprocessable(" ".join(errors.values()), errors)
    changes = {name: (getattr(client, name), value) for name, value in clean.items()}
    for name, (old, new) in changes.items():
        if old != new:
            setattr(client, name, new)
    record_changes(by, client, {name: (policy_text(old), policy_text(new)) for name, (old, new) in changes.items()},
                   action="client.updated")
    return client


def policy_text(value):
    if isinstance(value, list):
        return ", ".join(str(offset) for offset in value)
    return value


def step_label(offset):
    """How the office and the audit log read a step: `3 days before due`, `on the due date`, `7 days after due`."""
    if offset is None:
        return "sent by hand"
    if offset == 0:
        return "on the due date"
    days = abs(offset)
    return f"{days} day{'' if days == 1 else 's'} {'before' if offset < 0 else 'after'} due"


def describe_policy(client):
    """The client's policy in a sentence, for the client page."""
    if client.reminders_paused:
        return "Paused: no automatic reminders."
    steps = ", ".join(step_label(offset) for offset in sorted(client.reminder_offsets or ()))
    limit = client.reminder_limit
    return f"{steps[:1].upper()}{steps[1:]}; at most {limit} per bill."


# --- Which step is due ---------------------------------------------------------------------------

def business_day(moment):
    """The business's calendar date of a stored UTC time."""
    return to_business_time(moment).date()


def due_step(anchor, client, today, *, sent_steps, last_emailed_day):
    """The offset to send for this bill today, or None.

    The current step is the latest offset whose day has come; it is sent only if it was not sent
    before, the limit is not reached, and its day is after the last email about the bill.
    """
    if client.reminders_paused or anchor.due_at is None:
        return None
    due_day = business_day(anchor.due_at)
    come = [offset for offset in client.reminder_offsets or () if due_day + timedelta(days=offset) <= today]
    if not come:
        return None
    step = max(come)
    if step in sent_steps or len(sent_steps) >= client.reminder_limit:
        return None
    if due_day + timedelta(days=step) <= last_emailed_day:
        return None
    return step


def reminder_outlook(billing_record, now=None):
    """What the job's billing box says about this bill's automatic reminders; None when none apply."""
    if billing_record is None or not billing_record.live or billing_record.status not in COLLECTABLE:
        return None
    anchor = bill_anchor(billing_record)
    client = anchor.job.client
    if anchor.due_at is None:
        return "None: this bill has no due date."
    if client.reminders_paused:
        return f"Paused for {client.name}."
    sent = sent_steps_of([anchor.id])[anchor.id]
    if len(sent) >= client.reminder_limit:
        return f"All {client.reminder_limit} sent."
    today = business_day(now or utcnow())
    after = max(today - timedelta(days=1), last_emailed_days([anchor])[anchor.id])
    due_day = business_day(anchor.due_at)
    upcoming = [offset for offset in sorted(client.reminder_offsets or ())
                if offset not in sent and due_day + timedelta(days=offset) > after]
    if not upcoming:
        return "No more automatic reminders."
    day = due_day + timedelta(days=upcoming[0])
    return f"Next {'today' if day == today else local_date(at_noon(day))} ({step_label(upcoming[0])})."


def at_noon(day):
    """Noon of a business day, as aware UTC: a moment that is safely on that day."""
    return day_start_utc(day) + timedelta(hours=12)


def sent_steps_of(anchor_ids):
    """{anchor id: set of steps already claimed}; an unconfirmed claim counts, as it may have reached the customer."""
    steps = {anchor_id: set() for anchor_id in anchor_ids}
    if anchor_ids:
        rows = db.session.execute(select(CustomerEmail.record_id, CustomerEmail.reminder_step).where(
            CustomerEmail.record_id.in_(anchor_ids), CustomerEmail.reminder_step.is_not(None)))
        for record_id, step in rows:
            steps[record_id].add(step)
    return steps


def last_emailed_days(anchors):
    """{anchor id: business day of the latest email about the bill}, or of the bill's creation if none went out."""
    days = {anchor.id: business_day(anchor.created_at) for anchor in anchors}
    if anchors:
        rows = db.session.execute(
            select(CustomerEmail.record_id, func.max(func.coalesce(CustomerEmail.sent_at, CustomerEmail.claimed_at)))
            .where(CustomerEmail.record_id.in_(list(days))).group_by(CustomerEmail.record_id))
        for record_id, latest in rows:
            days[record_id] = max(days[record_id], business_day(latest))
    return days


def within_sending_hours(now):
    """Whether the scheduled run may email customers now (from SEND_FROM_HOUR, business time)."""
    return to_business_time(now).hour >= SEND_FROM_HOUR


def collectable_anchors(today):
    """The bills (batch invoices once) that may owe a reminder today: unpaid, with a due date, client not paused."""
    # No offset is earlier than EARLIEST_OFFSET, so bills due later than that cannot have a step yet.
    horizon = day_end_utc(today - timedelta(days=EARLIEST_OFFSET))
    records = db.session.scalars(
        select(BillingRecord).join(Job, BillingRecord.job_id == Job.id).join(Client, Job.client_id == Client.id)
        .where(BillingRecord.live, BillingRecord.status.in_(COLLECTABLE), BillingRecord.due_at.is_not(None),
               BillingRecord.due_at < horizon, Client.reminders_paused.is_(False))
        .options(joinedload(BillingRecord.job).joinedload(Job.client))
        .order_by(BillingRecord.id)
    ).all()
    anchors = {}
    for billing_record in records:
        anchor = bill_anchor(billing_record)
        anchors.setdefault(anchor.id, anchor)
    return list(anchors.values())


@dataclass
class RunSummary:
    """What one reminder run did: (record id, job numbers, step) sent, and why others were not."""

    sent: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # (record id, reason)
    failed: list = field(default_factory=list)  # (record id, error)

    def as_dict(self):
        return {"sent": self.sent, "skipped": self.skipped, "failed": self.failed}


class ReminderRunIncomplete(Exception):
    """Some reminders could not be sent (mail server down); the next run tries them again."""


def run_reminders(now=None, *, dry_run=False, by=SCHEDULER):
    """Send every bill its due reminder step, once; returns a RunSummary. Commits."""
    today = business_day(now or utcnow())
    summary = RunSummary()
    anchors = collectable_anchors(today)
    sent_steps = sent_steps_of([anchor.id for anchor in anchors])
    emailed = last_emailed_days(anchors)
    due = []
    for anchor in anchors:
        step = due_step(anchor, anchor.job.client, today, sent_steps=sent_steps[anchor.id],
                        last_emailed_day=emailed[anchor.id])
        if step is not None:
            due.append((anchor.id, step, bill_numbers(anchor)))
    db.session.rollback()  # end the read: each send locks and re-reads its own bill in a fresh transaction
    for anchor_id, step, numbers in due:
        if dry_run:
            summary.sent.append((anchor_id, numbers, step))
            continue
        try:
            claim = send_step(anchor_id, step, today, by=by)
        except AddressesRefused as refusal:  # every address bounced: the next hour's run would bounce again
            client = pause_for_refused_addresses(anchor_id, by=by)
            summary.failed.append((anchor_id, f"{refusal.message} Reminders paused for {client.name}."))
            continue
        except MailRefused as refusal:  # no billing email or no pay link: a person must fix the client or bill
            summary.skipped.append((anchor_id, refusal.message))
            continue
        except MailUnavailable as error:  # audited and the claim released (or kept if it may have gone out)
            summary.failed.append((anchor_id, str(error)))
            continue
        if claim is None:
            summary.skipped.append((anchor_id, "paid, paused or sent by another run meanwhile"))
        else:
            summary.sent.append((anchor_id, numbers, step))
    return summary


def pause_for_refused_addresses(anchor_id, *, by):
    """Pause the client's reminders (audited, shown on the client and job pages) until the office fixes its
    billing emails and resumes them; the refusal itself is on the job's timeline (email.failed)."""
    client = db.session.get(BillingRecord, anchor_id).job.client
    set_reminder_policy(client, by=by, paused=True)
    record(by, "reminder.paused", client, detail={"reason": "the mail server refused every billing address",
                                                  "billing_emails": client.billing_emails})
    db.session.commit()
    return client


def bill_numbers(anchor):
    return [shared.job.number for shared in records_on_bill(anchor)]


def lock_bill(anchor_id):
    """The bill's anchor record, locked FOR UPDATE and re-read: payment sync takes the same lock first."""
    return db.session.scalars(
        select(BillingRecord).where(BillingRecord.id == anchor_id)
        .with_for_update(of=BillingRecord).execution_options(populate_existing=True)
    ).one_or_none()


def still_collectable(anchor):
    return anchor is not None and all(
        shared.live and shared.status in COLLECTABLE for shared in records_on_bill(anchor))


def send_step(anchor_id, step, today, *, by):
    """Claim and send one automatic reminder step; None when it is no longer due (paid, paused, sent)."""
    anchor = lock_bill(anchor_id)
    if not still_collectable(anchor) or bill_anchor(anchor).id != anchor.id:
        db.session.rollback()
        return None
    client = db.session.get(Client, anchor.job.client_id, populate_existing=True)
    step_now = due_step(anchor, client, today, sent_steps=sent_steps_of([anchor.id])[anchor.id],
                        last_emailed_day=last_emailed_days([anchor])[anchor.id])
    if step_now != step:
        db.session.rollback()
        return None
    bill = compose_reminder(anchor, today=today, message_id=reminder_message_id(anchor, step))
    claim = claim_email(anchor, bill, EmailKind.REMINDER, by)
    claim.reminder_step = step
    db.session.add(claim)
    try:
        db.session.commit()  # the claim, and the end of the lock: from here on the customer may be emailed
    except IntegrityError:
        db.session.rollback()  # another run claimed this step first (SQLite has no row locks)
        return None
    return deliver_claimed(claim, bill, by=by, action="reminder.sent",
                           detail=reminder_detail(step, today, anchor))


def reminder_detail(step, today, anchor):
    return {"step": step, "step_label": step_label(step), "days_overdue": days_overdue(anchor, today),
            "jobs": bill_numbers(anchor)}


def reminder_message_id(anchor, step):
    what = "manual" if step is None else f"step{step}"
    return make_msgid(idstring=f"reminder-{anchor.id}-{what}", domain=mail_domain())


# --- By hand -------------------------------------------------------------------------------------

def request_reminder(billing_record, *, by):
    """The office's "Send a reminder now": audited, then sent by the worker once this commits."""
    if billing_record is None or not billing_record.live or billing_record.status not in COLLECTABLE:
        raise TransitionNotAllowed("Only a sent bill that is still unpaid can get a reminder.")
    anchor = bill_anchor(billing_record)
    record(by, "reminder.requested", billing_record, job=billing_record.job,
           detail={"record_id": anchor.id, "jobs": bill_numbers(anchor)})
    enqueue_after_commit(db.session, SEND_MANUAL_REMINDER, anchor.id, by.label)


def send_manual_reminder(anchor_id, *, by, now=None):
    """Send a reminder by hand, whatever the schedule and pause say; None if the bill was paid meanwhile."""
    today = business_day(now or utcnow())
    anchor = lock_bill(anchor_id)
    if not still_collectable(anchor):
        if anchor is not None:
            record(by, "reminder.skipped", anchor, job=anchor.job,
                   detail={"status": anchor.status.value, "live": anchor.live})
        db.session.commit()
        return None
    bill = compose_reminder(anchor, today=today, message_id=reminder_message_id(anchor, None))
    claim = claim_email(anchor, bill, EmailKind.REMINDER, by)
    db.session.add(claim)
    db.session.commit()
    return deliver_claimed(claim, bill, by=by, action="reminder.sent", detail=reminder_detail(None, today, anchor))


# --- The email -----------------------------------------------------------------------------------

def days_overdue(anchor, today):
    if anchor.due_at is None:
        return 0
    return max(0, (today - business_day(anchor.due_at)).days)


def compose_reminder(anchor, *, today, message_id):
    """The reminder for a bill (every job of a batch): job context, amount still due, due date, pay link."""
    config = current_app.config
    sharing = records_on_bill(anchor)
    jobs = [shared.job for shared in sharing]
    client = jobs[0].client
    to, envelope_to, office = recipients_for(client)
    pay_url = pay_link_of(anchor)
    amount_due = format_money(sum(max(0, shared.total - shared.amount_paid) for shared in sharing), anchor.currency)
    overdue_days = days_overdue(anchor, today)
    due_day = business_day(anchor.due_at) if anchor.due_at is not None else None
    subject = f"{'Overdue' if overdue_days else 'Reminder'}: {bill_subject(jobs, amount_due, anchor.kind)}"
    if due_day is not None and not overdue_days:
        subject += " today" if due_day == today else f" by {local_date(anchor.due_at)}"
    context = dict(
        business_name=config.get("BUSINESS_NAME", "Closeout Services"),
        client=client,
        jobs=[job_summary(job) for job in jobs],
        is_invoice=anchor.kind == RecordKind.INVOICE,
        invoice_number=anchor.invoice_number,
        due_on=local_date(anchor.due_at),
        due_today=due_day == today,
        days_overdue=overdue_days,
        amount_due=amount_due,
        pay_url=pay_url,
        office_email=office,
        subject=subject,
    )
    message = customer_message(subject, to, office, message_id)
    message.set_content(render_template("emails/reminder.txt", **context))
    message.add_alternative(render_template("emails/reminder.html", **context), subtype="html")
    return Bill(message=message, subject=subject, to=to, envelope_to=envelope_to)


def reminders_for(anchor):
    """Every reminder of a bill, oldest first (when, which step, to whom)."""
    return db.session.scalars(select(CustomerEmail).where(
        CustomerEmail.record_id == anchor.id, CustomerEmail.kind == EmailKind.REMINDER).order_by(CustomerEmail.id)
    ).all()
