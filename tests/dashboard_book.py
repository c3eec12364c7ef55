"""Builders for the dashboard, export and audit log tests: jobs with billing records at chosen moments."""
from datetime import datetime, timezone

from portal.billing.models import BillingRecord, BillingStatus, RecordKind
from portal.extensions import db
from portal.jobs.models import WorkStatus
from tests import factories


def at(text):
    """'2026-11-03 14:00' → an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def billed_job(client=None, *, crew=(), total=10000, status=BillingStatus.SENT, currency="usd", live=True,
               completed_at=None, amount_paid=0, amount_refunded=0, **moments):
    """A completed job with one billing record; `moments` are sent_at, paid_at, due_at, refunded_at, disputed_at."""
    job = factories.job(client, crew=list(crew))
    job.currency = currency
    job.work_status = WorkStatus.COMPLETED
    job.completed_at = completed_at or at("2026-10-01 12:00")
    job.billing_status = status if live else BillingStatus.NOT_BILLED
    record = BillingRecord(job=job, kind=RecordKind.INVOICE, live=live, currency=currency, subtotal=total,
                           total=total, amount_paid=amount_paid, amount_refunded=amount_refunded)
    record.status = status
    # The status listener stamps milestones with "now"; a test sets the moments it means, and clears the rest.
    for column in ("sent_at", "paid_at", "refunded_at", "disputed_at"):
        setattr(record, column, moments.pop(column, None))
    record.due_at = moments.pop("due_at", None)
    assert not moments, f"unknown moments {moments}"
    db.session.add(record)
    db.session.commit()
    return record
