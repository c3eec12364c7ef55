"""Jobs and what a crew records on them: photos, notes, line items."""
import enum
from decimal import Decimal

from sqlalchemy import Column, Enum, ForeignKey, Index, Numeric, String, Table, Text, UniqueConstraint
from sqlalchemy import event
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship
from sqlalchemy.orm.attributes import get_history

from portal.billing.models import BillingStatus
from portal.extensions import db
from portal.money import totals_for
from portal.timeutil import UTCDateTime, utcnow


class WorkStatus(str, enum.Enum):
    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"

    @property
    def label(self):
        return self.value.replace("_", " ").capitalize()


job_assignments = Table(
    "job_assignments",
    db.metadata,
    Column("job_id", ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class Job(db.Model):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("client_id", "external_ref", name="uq_jobs_client_external_ref"),
        # A status, then board order: the board reads each column's first cards in order and stops.
        Index("ix_jobs_work_status_place", "work_status", "scheduled_start", "id"),
        Index("ix_jobs_billing_status_place", "billing_status", "scheduled_start", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str | None] = mapped_column(String(20), unique=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id"), index=True)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), index=True)
    scope: Mapped[str] = mapped_column(Text, default="")
    customer_notes: Mapped[str] = mapped_column(Text, default="")
    external_ref: Mapped[str | None] = mapped_column(String(120))
    scheduled_start = mapped_column(UTCDateTime, nullable=True, index=True)
    scheduled_end = mapped_column(UTCDateTime, nullable=True)
    currency: Mapped[str] = mapped_column(String(3), default="usd")
    # Amount + tax of its lines in minor units, kept by sync_lines_total at every flush, so lists and the
    # board sum one column instead of every line of every job.
    lines_total: Mapped[int] = mapped_column(default=0, server_default="0")
    work_status: Mapped[WorkStatus] = mapped_column(
        Enum(WorkStatus, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e]),
        default=WorkStatus.SCHEDULED,
    )
    billing_status: Mapped[BillingStatus] = mapped_column(
        Enum(BillingStatus, native_enum=False, length=24, values_callable=lambda e: [m.value for m in e]),
        default=BillingStatus.NOT_BILLED,
    )
    no_charge_reason: Mapped[str | None] = mapped_column(Text)
    completed_at = mapped_column(UTCDateTime, nullable=True, index=True)
    completed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    updated_at = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow, nullable=False, index=True)

    client = relationship("Client")
    site = relationship("Site")
    crew = relationship("User", secondary=job_assignments, order_by="User.name")
    completed_by = relationship("User", foreign_keys=[completed_by_id])
    photos = relationship("Photo", back_populates="job", order_by="Photo.id", cascade="all, delete-orphan")
    notes = relationship("Note", back_populates="job", order_by="Note.id", cascade="all, delete-orphan")
    line_items = relationship("JobLineItem", back_populates="job", order_by="JobLineItem.id", cascade="all, delete-orphan")
    billing_triggers = relationship("BillingTrigger", back_populates="job", order_by="BillingTrigger.id")
    billing_records = relationship("BillingRecord", back_populates="job", order_by="BillingRecord.id")

    @property
    def totals(self):
        return totals_for(self.line_items, self.currency)

    @property
    def live_billing_record(self):
        return next((record for record in self.billing_records if record.live), None)

    @property
    def address(self):
        return self.site.address if self.site else self.client.address

    def __repr__(self):
        return f"<Job {self.number or self.id}>"


class Photo(db.Model):
    __tablename__ = "photos"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    storage_key: Mapped[str] = mapped_column(String(255), unique=True)
    content_type: Mapped[str] = mapped_column(String(40))
    original_filename: Mapped[str] = mapped_column(String(255), default="")
    size_bytes: Mapped[int]
    width: Mapped[int]
    height: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    taken_at = mapped_column(UTCDateTime, nullable=True)
    uploaded_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)

    job = relationship("Job", back_populates="photos")
    uploaded_by = relationship("User")


class Note(db.Model):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    body: Mapped[str] = mapped_column(Text)
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)

    job = relationship("Job", back_populates="notes")
    author = relationship("User")


class LineItemTemplate(db.Model):
    __tablename__ = "line_item_templates"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="")
    unit: Mapped[str] = mapped_column(String(20), default="each")
    unit_amount: Mapped[int]  # minor units
    currency: Mapped[str] = mapped_column(String(3), default="usd")
    taxable: Mapped[bool] = mapped_column(default=True)
    active: Mapped[bool] = mapped_column(default=True)
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)


class JobLineItem(db.Model):
    """A charge on a job; amount and tax are rounded once, here, and summed everywhere else."""

    __tablename__ = "job_line_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    template_id: Mapped[int | None] = mapped_column(ForeignKey("line_item_templates.id"))
    description: Mapped[str] = mapped_column(Text)
    unit: Mapped[str] = mapped_column(String(20), default="each")
    quantity: Mapped[Decimal] = mapped_column(Numeric(12, 3))
    unit_amount: Mapped[int]
    taxable: Mapped[bool] = mapped_column(default=False)
    tax_percent: Mapped[Decimal] = mapped_column(Numeric(7, 4), default=Decimal("0"))
    amount: Mapped[int]
    tax_amount: Mapped[int] = mapped_column(default=0)
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)

    job = relationship("Job", back_populates="line_items")
    template = relationship("LineItemTemplate")


@event.listens_for(Session, "before_flush")
def touch_jobs_on_child_changes(session, flush_context, instances):
    """A change to a job's items, photos, notes or crew is a change to the job (for `updated_since`)."""
    now = utcnow()
    priced = set()
    for obj in list(session.new) + list(session.dirty) + list(session.deleted):
        if isinstance(obj, (JobLineItem, Photo, Note)) and obj.job is not None:
            obj.job.updated_at = now
            if isinstance(obj, JobLineItem):
                priced.add(obj.job)
        elif isinstance(obj, Job) and obj in session.dirty and session.is_modified(obj):
            obj.updated_at = now
            if get_history(obj, "line_items").has_changes():  # a line taken off leaves no job on the line
                priced.add(obj)
    for job in priced:
        sync_lines_total(job, session)


def sync_lines_total(job, session):
    """Set the job's stored total from its lines as they will be after this flush."""
    job.lines_total = sum(item.amount + item.tax_amount for item in job.line_items if item not in session.deleted)
