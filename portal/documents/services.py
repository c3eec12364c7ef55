"""Document links: issuing, revoking and resolving the tokens that open a proof-of-work PDF.

The reliability issue asks that customer-facing tokens carry at least 128 bits of randomness,
are stored hashed, expire and can be revoked: only the SHA-256 of a token is kept, so a leaked
database opens nothing.
"""
import hashlib
import re
import secrets
from datetime import timedelta

from flask import abort, current_app
from sqlalchemy import func, select

from portal.audit.services import record
from portal.billing.models import BillingTrigger, DocumentLink
from portal.errors import TransitionNotAllowed
from portal.extensions import db
from portal.photos.storage import get_storage
from portal.timeutil import utcnow

TOKEN_BYTES = 32  # 256 bits
DEFAULT_DAYS = 60
# token_urlsafe(32) makes 43 characters; 22 is 128 bits, the floor any token we issue must meet.
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{22,128}")
URL_PREFIX = "/d"  # where create_app registers the documents blueprint


def hash_token(raw_token):
    """The stored form of a token."""
    return hashlib.sha256(raw_token.encode()).hexdigest()


def issue_document_link(trigger, days=DEFAULT_DAYS):
    """A new link to the trigger's proof PDF; returns the raw token, which is never stored."""
    return create_document_link(trigger, days)[1]


def create_document_link(trigger, days=DEFAULT_DAYS):
    """A new link to the trigger's proof PDF, as (its row, the raw token)."""
    raw_token = secrets.token_urlsafe(TOKEN_BYTES)
    link = DocumentLink(trigger=trigger, token_hash=hash_token(raw_token), expires_at=utcnow() + timedelta(days=days))
    db.session.add(link)
    db.session.flush()
    return link, raw_token


def document_url(raw_token):
    """The absolute URL a customer opens, built from PUBLIC_URL (emails are sent outside any request)."""
    base = current_app.config.get("PUBLIC_URL", "http://localhost:5000").rstrip("/")
    return f"{base}{URL_PREFIX}/{raw_token}"


def revoke_document_links(trigger, *, by=None):
    """Revoke every link to the trigger's proof PDF that still opens; returns the links revoked."""
    now = utcnow()
    links = db.session.scalars(
        select(DocumentLink).where(DocumentLink.trigger_id == trigger.id, DocumentLink.revoked_at.is_(None))
    ).all()
    for link in links:
        link.revoked_at = now
    if links and by is not None:
        record(by, "document_links.revoked", trigger, job=trigger.job,
               detail={"trigger_id": trigger.id, "count": len(links)})
    return links


def open_document_links_of(job):
    """How many links to the job's proof PDFs still open (not revoked, not expired)."""
    return db.session.scalar(
        select(func.count()).select_from(DocumentLink).join(BillingTrigger)
        .where(BillingTrigger.job_id == job.id, DocumentLink.revoked_at.is_(None), DocumentLink.expires_at > utcnow()))


def revoke_job_document_links(job, *, by):
    """Staff's "Revoke customer links": every link to any of the job's proof PDFs stops opening; returns how many."""
    revoked = [link for trigger in job.billing_triggers for link in revoke_document_links(trigger, by=by)]
    if not revoked:
        raise TransitionNotAllowed("No customer link to this job's proof is open.")
    return len(revoked)


def get_document_for(raw_token):
    """The billing trigger whose proof PDF this token opens; 404 for unknown, expired or revoked tokens."""
    if not TOKEN_PATTERN.fullmatch(raw_token):
        abort(404)
    link = db.session.scalar(select(DocumentLink).where(DocumentLink.token_hash == hash_token(raw_token)))
    if link is None or link.revoked_at is not None or link.expires_at <= utcnow():
        abort(404)
    trigger = link.trigger
    if trigger.proof_pdf_key is None or not get_storage().exists(trigger.proof_pdf_key):
        abort(404)
    return trigger


def open_proof_pdf(trigger):
    """The trigger's stored proof PDF, opened for reading."""
    return get_storage().open(trigger.proof_pdf_key)
