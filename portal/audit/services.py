"""Writing the audit log. Every change a person or system makes goes through record()."""
import enum
from dataclasses import dataclass

from portal.audit.models import AuditEntry, Source
from portal.extensions import db


@dataclass(frozen=True)
class Actor:
    """Who or what is making a change: a user, an API token, a webhook event, the system."""

    source: Source
    ref: str | None
    label: str
    user: object = None

    @classmethod
    def for_user(cls, user):
        return cls(Source.USER, str(user.id), f"{user.name} ({user.role.value})", user)

    @classmethod
    def for_token(cls, token):
        return cls(Source.API_TOKEN, str(token.id), f"API token {token.name}")

    @classmethod
    def system(cls, label="system"):
        return cls(Source.SYSTEM, None, label)


def _text(value):
    if isinstance(value, enum.Enum):
        return value.value  # str() of a str-Enum is "WorkStatus.COMPLETED" on 3.11
    return value


def record(actor, action, entity, *, job=None, field=None, old=None, new=None, detail=None):
    """Append one audit entry in the current transaction."""
    entry = AuditEntry(
        source=actor.source,
        actor_ref=actor.ref,
        actor_label=actor.label,
        entity_type=entity.__tablename__.rstrip("s") if entity is not None else "system",
        entity_id=getattr(entity, "id", None),
        job_id=job.id if job is not None else None,
        action=action,
        field=field,
        old_value=None if old is None else str(_text(old)),
        new_value=None if new is None else str(_text(new)),
        detail=detail,
    )
    db.session.add(entry)
    return entry


def record_changes(actor, entity, changes, *, job=None, action="updated"):
    """One entry per changed field; `changes` maps field → (old, new)."""
    for field, (old, new) in changes.items():
        if old != new:
            record(actor, action, entity, job=job, field=field, old=old, new=new)


def trail_for_job(job_id):
    """The job's audit trail, oldest first."""
    return db.session.scalars(
        db.select(AuditEntry).where(AuditEntry.job_id == job_id).order_by(AuditEntry.id)
    ).all()
