"""Reading the audit log: filtered, newest first, a page at a time. There is no path that changes it."""
from sqlalchemy import select

from portal.audit.models import AuditEntry, Source
from portal.auth.models import User
from portal.extensions import db
from portal.jobs.models import Job

ENTRIES_PER_PAGE = 50


def audit_log_page(*, job_number=None, user_id=None, source=None, since=None, before=None, page=1,
                   per_page=ENTRIES_PER_PAGE):
    """One page of entries matching the filters, and the job numbers they name (two queries and a count)."""
    query = select(AuditEntry)
    if job_number:
        query = query.where(AuditEntry.job_id.in_(select(Job.id).where(Job.number == job_number.upper())))
    if user_id:
        # A person's entries are the ones they made signed in (their API tokens are their own source).
        query = query.where(AuditEntry.source == Source.USER, AuditEntry.actor_ref == str(user_id))
    if source is not None:
        query = query.where(AuditEntry.source == source)
    if since is not None:
        query = query.where(AuditEntry.created_at >= since)
    if before is not None:
        query = query.where(AuditEntry.created_at < before)
    results = db.paginate(query.order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc()), page=page,
                          per_page=per_page, error_out=False)
    job_ids = {entry.job_id for entry in results.items if entry.job_id is not None}
    numbers = dict(db.session.execute(select(Job.id, Job.number).where(Job.id.in_(job_ids))).all()) if job_ids else {}
    return results, numbers


def people():
    """Everyone who can sign in, for the audit log's person filter."""
    return db.session.scalars(select(User).order_by(User.name, User.id)).all()
