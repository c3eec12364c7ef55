"""The rules of clients and their sites: billing policy, billing emails, who may see them."""
import enum
import re

from email_validator import EmailNotValidError, validate_email
from flask import abort
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from portal.audit.services import record, record_changes
from portal.clients.models import Batching, BillingMode, Client, SendMode, Site
from portal.errors import Unprocessable
from portal.extensions import db, is_row_id
from portal.jobs.models import Job

# The currencies the office may pick; each has two decimal places, which parse_major_amount assumes.
CLIENT_CURRENCIES = ("usd", "cad", "eur", "gbp", "aud")
MAX_BILLING_EMAILS = 10
CLIENT_FIELDS = ("name", "billing_emails", "phone", "address", "billing_mode", "send_mode", "days_until_due",
                 "batching", "currency", "allow_no_charge", "tax_exempt")
SITE_FIELDS = ("name", "address", "access_notes")
RECENT_JOBS = 20


def get_client_for(user, client_id):
    """The client, if this user may see clients (staff); 404 otherwise."""
    client = db.session.get(Client, client_id) if user.is_staff and is_row_id(client_id) else None
    if client is None:
        abort(404)
    return client


def get_site_for(user, client_id, site_id):
    """The client's site, if this user may see it; 404 for another client's site too."""
    client = get_client_for(user, client_id)
    site = db.session.get(Site, site_id) if is_row_id(site_id) else None
    if site is None or site.client_id != client.id:
        abort(404)
    return site


def search_clients(text=""):
    """A select of clients whose name contains `text`, by name; the caller paginates it."""
    query = select(Client).order_by(Client.name, Client.id)
    text = (text or "").strip()
    if text:
        query = query.where(Client.name.icontains(text, autoescape=True))
    return query


def client_choices():
    """(id, name) pairs of every client, for pickers."""
    return db.session.execute(select(Client.id, Client.name).order_by(Client.name, Client.id)).all()


def recent_jobs_for(client, limit=RECENT_JOBS):
    """The client's latest jobs, newest schedule first, with what their rows show loaded."""
    query = (
        select(Job)
        .where(Job.client_id == client.id)
        .options(selectinload(Job.site), selectinload(Job.line_items))
        .order_by(Job.scheduled_start.desc().nulls_last(), Job.id.desc())
        .limit(limit)
    )
    return db.session.scalars(query).all()


def parse_billing_emails(value):
    """Billing emails from a list or from text separated by commas or new lines, each validated."""
    if isinstance(value, str):
        value = re.split(r"[,;\s]+", value)
    emails, bad = [], []
    for candidate in (item.strip() for item in value or ()):
        if not candidate:
            continue
        try:
            # Deliverability means a DNS lookup: slow, and offline in tests and on a laptop.
            normalized = validate_email(candidate, check_deliverability=False).normalized
        except EmailNotValidError as error:
            bad.append(f"{candidate} ({str(error).rstrip('.')})")
            continue
        if normalized.lower() not in (email.lower() for email in emails):
            emails.append(normalized)
    if bad:
        raise Unprocessable(f"Not a valid email address: {'; '.join(bad)}.", {"billing_emails": "invalid"})
    if not emails:
        raise Unprocessable("Add at least one billing email.", {"billing_emails": "required"})
    if len(emails) > MAX_BILLING_EMAILS:
        raise Unprocessable(f"At most {MAX_BILLING_EMAILS} billing emails.", {"billing_emails": "too many"})
    return emails


def clean_client_fields(fields):
    """Validate and normalise client fields; raises Unprocessable naming every bad field."""
    unknown = set(fields) - set(CLIENT_FIELDS)
    if unknown:
        raise TypeError(f"not client fields: {', '.join(sorted(unknown))}")
    clean, errors = {}, {}
    for field, value in fields.items():
        try:
            clean[field] = _clean_client_field(field, value)
        except Unprocessable as error:
            errors[field] = error.message
    if errors:
        raise Unprocessable(" ".join(errors.values()), errors)
    return clean


def _clean_client_field(field, value):
    if field == "name":
        value = (value or "").strip()
        if not value:
            raise Unprocessable("The client needs a name.")
        return value[:200]
    if field == "billing_emails":
        return parse_billing_emails(value)
    if field == "phone":
        return (value or "").strip()[:40]
    if field == "address":
        return (value or "").strip()
    if field in ("billing_mode", "send_mode", "batching"):
        kind = {"billing_mode": BillingMode, "send_mode": SendMode, "batching": Batching}[field]
        try:
            return kind(value)
        except ValueError:
            raise Unprocessable(f"Choose a {field.replace('_', ' ')}.") from None
    if field == "days_until_due":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 365:
            raise Unprocessable("Days until due must be a whole number from 0 to 365.")
        return value
    if field == "currency":
        value = (value or "").strip().lower()
        if value not in CLIENT_CURRENCIES:
            raise Unprocessable(f"Currency must be one of {', '.join(c.upper() for c in CLIENT_CURRENCIES)}.")
        return value
    return bool(value)  # allow_no_charge, tax_exempt


def create_client(*, by, **fields):
    """A new billed account with its billing policy."""
    if "name" not in fields or "billing_emails" not in fields:
        raise Unprocessable("A client needs a name and a billing email.",
                            {name: "required" for name in ("name", "billing_emails") if name not in fields})
    client = Client(**clean_client_fields(fields))
    db.session.add(client)
    db.session.flush()
    record(by, "client.created", client, detail={"name": client.name, "currency": client.currency,
                                                 "billing_mode": client.billing_mode.value,
                                                 "batching": client.batching.value})
    return client


def update_client(client, *, by, **fields):
    """Change a client's details or billing policy, one audit entry per changed field."""
    clean = clean_client_fields(fields)
    changes = {field: (getattr(client, field), value) for field, value in clean.items()}
    # Jobs copy the currency when they are created, so a change applies to new jobs only.
    for field, (old, new) in changes.items():
        if old != new:
            setattr(client, field, new)
    record_changes(by, client, {field: (_audit_text(old), _audit_text(new)) for field, (old, new) in changes.items()},
                   action="client.updated")
    return client


def _audit_text(value):
    if isinstance(value, list):
        return ", ".join(value)
    if isinstance(value, enum.Enum):
        return value.value  # str() of a str-Enum is "Batching.WEEKLY" on Python 3.11
    return value


def clean_site_fields(fields):
    """Validate and normalise site fields."""
    unknown = set(fields) - set(SITE_FIELDS)
    if unknown:
        raise TypeError(f"not site fields: {', '.join(sorted(unknown))}")
    clean = {field: (value or "").strip() for field, value in fields.items()}
    errors = {field: "required" for field in ("name", "address") if field in clean and not clean[field]}
    if errors:
        raise Unprocessable("A site needs a name and an address.", errors)
    if "name" in clean:
        clean["name"] = clean["name"][:200]
    return clean


def create_site(client, *, by, **fields):
    """A new service address under a client."""
    clean = clean_site_fields({"name": "", "address": "", **fields})
    site = Site(client=client, **clean)
    db.session.add(site)
    db.session.flush()
    record(by, "site.created", site, detail={"client_id": client.id, "name": site.name, "address": site.address})
    return site


def update_site(site, *, by, **fields):
    """Change a site's name, address or access notes, one audit entry per changed field."""
    clean = clean_site_fields(fields)
    changes = {field: (getattr(site, field), value) for field, value in clean.items()}
    for field, (old, new) in changes.items():
        if old != new:
            setattr(site, field, new)
    record_changes(by, site, changes, action="site.updated")
    return site
