"""The append-only audit log: who or what changed which field, from what to what, when."""
import enum

from sqlalchemy import JSON, Enum, ForeignKey, Index, String, Text, event
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db
from portal.timeutil import UTCDateTime, utcnow


class Source(str, enum.Enum):
    USER = "user"
    API_TOKEN = "api_token"
    WEBHOOK = "webhook"
    SYSTEM = "system"
    RECONCILE = "reconcile"


class AuditEntry(db.Model):
    """Rows are only ever inserted; nothing in the app updates or deletes them."""

    __tablename__ = "audit_entries"
    # The audit log view filters by who did it; on PostgreSQL a trigger refuses UPDATE and DELETE
    # (migration 3f6a1c2b7d02).
    __table_args__ = (Index("ix_audit_entries_source_actor_ref", "source", "actor_ref"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False, index=True)
    source: Mapped[Source] = mapped_column(Enum(Source, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e]))
    actor_ref: Mapped[str | None] = mapped_column(String(120))  # user id, token id, Stripe event id
    actor_label: Mapped[str] = mapped_column(String(200))
    entity_type: Mapped[str] = mapped_column(String(40))
    entity_id: Mapped[int | None]
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), index=True)
    action: Mapped[str] = mapped_column(String(60))
    field: Mapped[str | None] = mapped_column(String(60))
    old_value: Mapped[str | None] = mapped_column(Text)
    new_value: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict | None] = mapped_column(JSON)


class AuditLogIsAppendOnly(RuntimeError):
    """Something tried to change or delete an audit entry."""


@event.listens_for(AuditEntry, "before_update")
@event.listens_for(AuditEntry, "before_delete")
def refuse_changes(mapper, connection, entry):
    """The ORM refuses too, on every database (PostgreSQL's trigger also stops raw SQL)."""
    raise AuditLogIsAppendOnly(f"audit entry {entry.id} cannot be changed or deleted")
