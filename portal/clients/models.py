"""Billed accounts, their sites and their billing policy."""
import enum

from sqlalchemy import JSON, CheckConstraint, Enum, ForeignKey, String, Text, false, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.timeutil import UTCDateTime, utcnow


def _enum(cls):
    return Enum(cls, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])


class BillingMode(str, enum.Enum):
    INVOICE = "invoice"
    PAYMENT_LINK = "payment_link"


class SendMode(str, enum.Enum):
    DRAFT = "draft"  # the office reviews and approves
    AUTO = "auto"


class Batching(str, enum.Enum):
    PER_JOB = "per_job"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    MANUAL = "manual"


# Dunning (portal/reminders): days relative to the due date, before (-) or after (+) it.
DEFAULT_REMINDER_OFFSETS = (-3, 0, 7, 14)
DEFAULT_REMINDER_LIMIT = 4


def default_reminder_offsets():
    """A fresh list per row: a shared default list would be mutated across clients."""
    return list(DEFAULT_REMINDER_OFFSETS)


class Client(db.Model):
    __tablename__ = "clients"
    __table_args__ = (CheckConstraint("days_until_due >= 0 AND days_until_due <= 365", name="days_until_due_range"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    billing_emails: Mapped[list] = mapped_column(JSON, default=list)
    phone: Mapped[str] = mapped_column(String(40), default="")
    address: Mapped[str] = mapped_column(Text, default="")
    stripe_customer_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    # Billing policy (the closeout-to-cash worker reads these).
    billing_mode: Mapped[BillingMode] = mapped_column(_enum(BillingMode), default=BillingMode.INVOICE)
    send_mode: Mapped[SendMode] = mapped_column(_enum(SendMode), default=SendMode.DRAFT)
    days_until_due: Mapped[int] = mapped_column(default=30)
    batching: Mapped[Batching] = mapped_column(_enum(Batching), default=Batching.PER_JOB)
    currency: Mapped[str] = mapped_column(String(3), default="usd")
    allow_no_charge: Mapped[bool] = mapped_column(default=False)
    tax_exempt: Mapped[bool] = mapped_column(default=False)
    # Reminder policy: automatic reminders on these day offsets from the due date, at most
    # `reminder_limit` per bill; paused stops them (the office can still send one by hand).
    reminder_offsets: Mapped[list] = mapped_column(JSON, default=default_reminder_offsets,
                                                   server_default=text("'[-3, 0, 7, 14]'"))
    reminder_limit: Mapped[int] = mapped_column(default=DEFAULT_REMINDER_LIMIT,
                                                server_default=text(str(DEFAULT_REMINDER_LIMIT)))
    reminders_paused: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    updated_at = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow, nullable=False)

    sites = relationship("Site", back_populates="client", order_by="Site.name")

    def __repr__(self):
        return f"<Client {self.id} {self.name}>"


class Site(db.Model):
    """A service address under a client; a property manager has many."""

    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(Text)
    access_notes: Mapped[str] = mapped_column(Text, default="")
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)

    client = relationship("Client", back_populates="sites")
