"""Stored Stripe events and the sync's own bookkeeping (watermark, failure alert)."""
import enum

from sqlalchemy import JSON, BigInteger, Enum, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db
from portal.timeutil import UTCDateTime, utcnow


class EventStatus(str, enum.Enum):
    RECEIVED = "received"  # stored, waiting for the worker (or for a retry)
    PROCESSED = "processed"
    IGNORED = "ignored"  # a type Closeout does not handle, or dismissed by a person
    FAILED = "failed"  # every attempt failed: on the Webhook issues page


class WebhookEvent(db.Model):
    """One Stripe event, stored once by its Stripe id however often it is delivered."""

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    stripe_event_id: Mapped[str] = mapped_column(String(255), unique=True)
    type: Mapped[str] = mapped_column(String(100), index=True)
    payload: Mapped[dict] = mapped_column(JSON)
    # The event's own `created` (unix seconds): the clock precedence compares.
    stripe_created: Mapped[int] = mapped_column(BigInteger)
    received_via: Mapped[str] = mapped_column(String(16), default="webhook")  # or "reconcile"
    status: Mapped[EventStatus] = mapped_column(
        Enum(EventStatus, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e]),
        default=EventStatus.RECEIVED, index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    received_at = mapped_column(UTCDateTime, default=utcnow, nullable=False, index=True)
    processed_at = mapped_column(UTCDateTime, nullable=True, index=True)


class StripeSyncState(db.Model):
    """A single row: how far reconciliation has read Stripe's events, and whether the owner was alerted."""

    __tablename__ = "stripe_sync_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    events_watermark: Mapped[int | None] = mapped_column(BigInteger)
    last_reconciled_at = mapped_column(UTCDateTime, nullable=True)
    # Set when the failure alert is emailed; cleared once no event is failed, so the next outbreak alerts again.
    failure_alert_sent_at = mapped_column(UTCDateTime, nullable=True)
