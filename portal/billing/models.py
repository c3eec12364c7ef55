"""Billing records and the outbox of billing triggers (see shared/billing-states.md)."""
import enum

from sqlalchemy import Enum, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.timeutil import UTCDateTime, utcnow


def _enum(cls, length=24):
    return Enum(cls, native_enum=False, length=length, values_callable=lambda e: [m.value for m in e])


class BillingStatus(str, enum.Enum):
    """A job's billing status: its live record's status, or one of the first three."""

    NOT_BILLED = "not_billed"
    READY_TO_BILL = "ready_to_bill"  # completed, waiting for its batch
    NO_CHARGE = "no_charge"
    PENDING = "pending"  # shown as "billing pending"
    FAILED = "failed"
    DRAFT = "draft"
    SENT = "sent"
    PROCESSING = "processing"
    PAYMENT_FAILED = "payment_failed"
    OVERDUE = "overdue"
    PAID = "paid"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    DISPUTED = "disputed"
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"

    @property
    def label(self):
        return BILLING_LABELS[self]


BILLING_LABELS = {
    BillingStatus.NOT_BILLED: "Not billed",
    BillingStatus.READY_TO_BILL: "Ready to bill",
    BillingStatus.NO_CHARGE: "No charge",
    BillingStatus.PENDING: "Billing pending",
    BillingStatus.FAILED: "Billing failed",
    BillingStatus.DRAFT: "Draft invoice: review",
    BillingStatus.SENT: "Sent",
    BillingStatus.PROCESSING: "Payment processing",
    BillingStatus.PAYMENT_FAILED: "Payment failed",
    BillingStatus.OVERDUE: "Overdue",
    BillingStatus.PAID: "Paid",
    BillingStatus.PARTIALLY_REFUNDED: "Partially refunded",
    BillingStatus.REFUNDED: "Refunded",
    BillingStatus.DISPUTED: "Disputed",
    BillingStatus.VOID: "Void",
    BillingStatus.UNCOLLECTIBLE: "Uncollectible",
}

# Once a job has any of these, the crew and the line items are frozen.
BILLED_STATUSES = frozenset(BillingStatus) - {BillingStatus.NOT_BILLED, BillingStatus.READY_TO_BILL, BillingStatus.NO_CHARGE}


class RecordKind(str, enum.Enum):
    INVOICE = "invoice"
    PAYMENT_LINK = "payment_link"


class TriggerStatus(str, enum.Enum):
    PENDING = "pending"  # recorded; the worker has not finished it
    DONE = "done"
    FAILED = "failed"  # attempts exhausted or a permanent error: needs a person
    CANCELLED = "cancelled"  # the job was reopened before billing


class BillingTrigger(db.Model):
    """Outbox row: written in the transaction that completes a job, consumed by the worker."""

    __tablename__ = "billing_triggers"
    __table_args__ = (
        # One open trigger per job; a reopen cancels it before a new completion adds one.
        Index(
            "uq_billing_triggers_open_job",
            "job_id",
            unique=True,
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    status: Mapped[TriggerStatus] = mapped_column(_enum(TriggerStatus), default=TriggerStatus.PENDING, index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    enqueued_at = mapped_column(UTCDateTime, nullable=True)
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    finished_at = mapped_column(UTCDateTime, nullable=True)

    job = relationship("Job", back_populates="billing_triggers")


class BillingRecord(db.Model):
    """One attempt to charge for a job: an invoice or a payment link, with its Stripe ids."""

    __tablename__ = "billing_records"
    __table_args__ = (
        # At most one live record per job (shared/billing-states.md).
        Index(
            "uq_billing_records_live_job",
            "job_id",
            unique=True,
            postgresql_where=text("live"),
            sqlite_where=text("live = 1"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    kind: Mapped[RecordKind] = mapped_column(_enum(RecordKind, 16))
    status: Mapped[BillingStatus] = mapped_column(_enum(BillingStatus), default=BillingStatus.PENDING)
    live: Mapped[bool] = mapped_column(default=True)
    currency: Mapped[str] = mapped_column(String(3))
    subtotal: Mapped[int] = mapped_column(default=0)
    tax: Mapped[int] = mapped_column(default=0)
    total: Mapped[int] = mapped_column(default=0)
    amount_paid: Mapped[int] = mapped_column(default=0)
    amount_refunded: Mapped[int] = mapped_column(default=0)
    stripe_invoice_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    stripe_payment_link_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    hosted_url: Mapped[str | None] = mapped_column(Text)
    invoice_number: Mapped[str | None] = mapped_column(String(64))
    due_at = mapped_column(UTCDateTime, nullable=True)
    last_event_at = mapped_column(UTCDateTime, nullable=True)
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    closed_at = mapped_column(UTCDateTime, nullable=True)

    job = relationship("Job", back_populates="billing_records")
