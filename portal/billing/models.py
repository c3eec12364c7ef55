"""Billing records and the outbox of billing triggers (see shared/billing-states.md)."""
import enum

from sqlalchemy import Enum, ForeignKey, Index, String, Text, UniqueConstraint, event, inspect, text
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


class LeasedWork:
    """Work the worker claims with a lease: a crashed worker's lease simply runs out."""

    status: Mapped[TriggerStatus] = mapped_column(_enum(TriggerStatus), default=TriggerStatus.PENDING, index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    lease_until = mapped_column(UTCDateTime, nullable=True)
    # The RQ job last enqueued for it: the sweeper asks Redis whether that job is still alive.
    rq_job_id: Mapped[str | None] = mapped_column(String(100))
    enqueued_at = mapped_column(UTCDateTime, nullable=True)
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    finished_at = mapped_column(UTCDateTime, nullable=True)


class BillingTrigger(LeasedWork, db.Model):
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
    # The proof-of-work packet for this completion: the stored PDF and the fingerprint printed on it.
    proof_pdf_key: Mapped[str | None] = mapped_column(String(255))
    proof_sha256: Mapped[str | None] = mapped_column(String(64))

    job = relationship("Job", back_populates="billing_triggers")
    records = relationship("BillingRecord", back_populates="trigger", order_by="BillingRecord.id")


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
    trigger_id: Mapped[int | None] = mapped_column(ForeignKey("billing_triggers.id"), index=True)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("billing_batches.id"), index=True)
    kind: Mapped[RecordKind] = mapped_column(_enum(RecordKind, 16))
    status: Mapped[BillingStatus] = mapped_column(_enum(BillingStatus), default=BillingStatus.PENDING, index=True)
    live: Mapped[bool] = mapped_column(default=True)
    currency: Mapped[str] = mapped_column(String(3))
    subtotal: Mapped[int] = mapped_column(default=0)
    tax: Mapped[int] = mapped_column(default=0)
    total: Mapped[int] = mapped_column(default=0)
    amount_paid: Mapped[int] = mapped_column(default=0)
    amount_refunded: Mapped[int] = mapped_column(default=0)
    auto_send: Mapped[bool] = mapped_column(default=False)
    # A batch invoice is shared by the records of every job in it, so this one is not unique.
    stripe_invoice_id: Mapped[str | None] = mapped_column(String(64), index=True)
    stripe_payment_link_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    hosted_url: Mapped[str | None] = mapped_column(Text)
    invoice_number: Mapped[str | None] = mapped_column(String(64))
    due_at = mapped_column(UTCDateTime, nullable=True, index=True)
    last_event_at = mapped_column(UTCDateTime, nullable=True)
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    closed_at = mapped_column(UTCDateTime, nullable=True)
    closed_reason: Mapped[str | None] = mapped_column(Text)
    # When the record first reached each milestone (issue 7: the dashboard's lag figures and exports).
    # Set by the status listener below, so every path that moves a status stamps them.
    sent_at = mapped_column(UTCDateTime, nullable=True, index=True)
    paid_at = mapped_column(UTCDateTime, nullable=True, index=True)
    refunded_at = mapped_column(UTCDateTime, nullable=True, index=True)
    disputed_at = mapped_column(UTCDateTime, nullable=True, index=True)
    # When the job's work was completed, as it stood when this record was opened (set on insert, below):
    # the start of the dashboard's completion → sent lag, read without joining every job.
    work_completed_at = mapped_column(UTCDateTime, nullable=True)
    # When the bank decided a dispute on this payment (`charge.dispute.closed`): an older "dispute opened"
    # delivered after it is ignored, and a redelivered decision does nothing twice.
    dispute_closed_at = mapped_column(UTCDateTime, nullable=True)
    # The referral in force when the job was billed (issue 6): its partner earns the fee on payment.
    referral_id: Mapped[int | None] = mapped_column(ForeignKey("referrals.id"), index=True)

    job = relationship("Job", back_populates="billing_records")
    referral = relationship("Referral")
    trigger = relationship("BillingTrigger", back_populates="records")
    batch = relationship("BillingBatch", back_populates="records")


# The first time a record reaches a status at or past a milestone, the milestone's column is stamped.
MILESTONES = {
    "sent_at": frozenset({BillingStatus.SENT, BillingStatus.PROCESSING, BillingStatus.PAYMENT_FAILED,
                          BillingStatus.OVERDUE, BillingStatus.PAID, BillingStatus.PARTIALLY_REFUNDED,
                          BillingStatus.REFUNDED, BillingStatus.DISPUTED}),
    "paid_at": frozenset({BillingStatus.PAID, BillingStatus.PARTIALLY_REFUNDED, BillingStatus.REFUNDED,
                          BillingStatus.DISPUTED}),
    "refunded_at": frozenset({BillingStatus.PARTIALLY_REFUNDED, BillingStatus.REFUNDED}),
    "disputed_at": frozenset({BillingStatus.DISPUTED}),
}


@event.listens_for(BillingRecord.status, "set")
def stamp_milestones(billing_record, status, old, initiator):
    """Stamp sent_at/paid_at/refunded_at/disputed_at once, whichever code path moved the status."""
    now = None
    for column, statuses in MILESTONES.items():
        if status in statuses and getattr(billing_record, column) is None:
            now = now or utcnow()
            setattr(billing_record, column, now)


@event.listens_for(BillingRecord, "before_insert")
def copy_work_completed_at(mapper, connection, billing_record):
    job = inspect(billing_record).attrs.job.loaded_value  # the job in memory, never a query mid-flush
    if billing_record.work_completed_at is None and isinstance(job, db.Model):
        billing_record.work_completed_at = job.completed_at


class BillingBatch(LeasedWork, db.Model):
    """One invoice for a client's completed jobs in a period (weekly, monthly, or a manual "Bill now")."""

    __tablename__ = "billing_batches"
    __table_args__ = (UniqueConstraint("client_id", "period_key", name="uq_billing_batches_client_period"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id"), index=True)
    period_key: Mapped[str] = mapped_column(String(40))  # "2026-W48", "2026-11", "manual-<id>"
    stripe_invoice_id: Mapped[str | None] = mapped_column(String(64), unique=True)

    client = relationship("Client")
    records = relationship("BillingRecord", back_populates="batch", order_by="BillingRecord.id")


class EmailKind(str, enum.Enum):
    BILL = "bill"  # the first email with the pay link and the proof PDF
    RESEND = "resend"
    REMINDER = "reminder"


class CustomerEmail(db.Model):
    """Every email sent to a customer. One BILL email per billing record, enforced here."""

    __tablename__ = "customer_emails"
    __table_args__ = (
        Index(
            "uq_customer_emails_one_bill_per_record",
            "record_id",
            unique=True,
            postgresql_where=text("kind = 'bill'"),
            sqlite_where=text("kind = 'bill'"),
        ),
        # One automatic reminder per bill and policy step (portal/reminders); manual ones have no step.
        Index(
            "uq_customer_emails_one_reminder_per_step",
            "record_id",
            "reminder_step",
            unique=True,
            postgresql_where=text("reminder_step IS NOT NULL"),
            sqlite_where=text("reminder_step IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    record_id: Mapped[int] = mapped_column(ForeignKey("billing_records.id"), index=True)
    kind: Mapped[EmailKind] = mapped_column(_enum(EmailKind, 16))
    # An automatic reminder's step: its day offset from the due date (-3, 0, 7…).
    reminder_step: Mapped[int | None] = mapped_column()
    recipients: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(String(255), unique=True)
    # Claimed before SMTP is spoken to, sent after it accepted: a crash in between never sends twice.
    claimed_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    sent_at = mapped_column(UTCDateTime, nullable=True)
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(200))

    record = relationship("BillingRecord")


class DocumentLink(db.Model):
    """A customer-facing link to a proof PDF: random, stored hashed, expiring and revocable."""

    __tablename__ = "document_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    trigger_id: Mapped[int] = mapped_column(ForeignKey("billing_triggers.id"), index=True)
    expires_at = mapped_column(UTCDateTime, nullable=False)
    revoked_at = mapped_column(UTCDateTime, nullable=True)
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)

    trigger = relationship("BillingTrigger")


class StripeTaxRate(db.Model):
    """The Stripe tax rate object for each sales-tax percentage we have billed with."""

    __tablename__ = "stripe_tax_rates"

    id: Mapped[int] = mapped_column(primary_key=True)
    percent: Mapped[str] = mapped_column(String(12), unique=True)
    stripe_tax_rate_id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)
