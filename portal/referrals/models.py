"""Referral partners, who referred what, and the payout ledger (issue 6).

Money is integer minor units in the payout's currency. A payout is unique per job and partner;
every step it takes (accrued, held, transferred, reversed, ...) is a PayoutEntry.
"""
import enum

from sqlalchemy import JSON, CheckConstraint, Date, Enum, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.timeutil import UTCDateTime, utcnow


def _enum(cls, length=24):
    return Enum(cls, native_enum=False, length=length, values_callable=lambda e: [m.value for m in e])


class FeeKind(str, enum.Enum):
    PERCENT = "percent"  # basis points of the fee base
    FLAT = "flat"  # a fixed amount per paid job


class FeeBase(str, enum.Enum):
    SUBTOTAL = "subtotal"  # the pre-tax share of what was paid
    TOTAL = "total"  # what was paid, tax included


class DisputePolicy(str, enum.Enum):
    HOLD = "hold"  # an unpaid payout waits; a paid one stays unless the dispute is lost (then reversed)
    REVERSE = "reverse"  # reverse the transfer (or cancel the payout) as soon as a dispute opens


class AccountStatus(str, enum.Enum):
    NONE = "none"  # no connected account yet
    ONBOARDING = "onboarding"  # created in Stripe; the partner has not finished onboarding
    READY = "ready"  # transfers can go to it


class FeeRule:
    """Columns of a fee rule: a partner's default, or a referral's override (NULL = use the partner's)."""

    fee_kind: Mapped[FeeKind | None] = mapped_column(_enum(FeeKind, 16), nullable=True)
    fee_basis_points: Mapped[int | None] = mapped_column(nullable=True)  # 1000 = 10.00 %
    fee_flat: Mapped[int | None] = mapped_column(nullable=True)  # minor units
    fee_base: Mapped[FeeBase | None] = mapped_column(_enum(FeeBase, 16), nullable=True)
    fee_minimum: Mapped[int | None] = mapped_column(nullable=True)
    fee_cap: Mapped[int | None] = mapped_column(nullable=True)


class Partner(FeeRule, db.Model):
    """Someone who sends work and earns a fee when it is paid."""

    __tablename__ = "partners"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    contact_name: Mapped[str] = mapped_column(String(120), default="")
    email: Mapped[str] = mapped_column(String(254), default="")
    phone: Mapped[str] = mapped_column(String(40), default="")
    # The login with the partner role; one partner per user.
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), unique=True)
    stripe_account_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    account_status: Mapped[AccountStatus] = mapped_column(_enum(AccountStatus, 16), default=AccountStatus.NONE)
    currency: Mapped[str] = mapped_column(String(3), default="usd")
    hold_days: Mapped[int] = mapped_column(default=0)  # release a payout N days after payment
    dispute_policy: Mapped[DisputePolicy] = mapped_column(_enum(DisputePolicy, 16), default=DisputePolicy.HOLD)
    active: Mapped[bool] = mapped_column(default=True)
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    updated_at = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow, nullable=False)

    user = relationship("User")
    referrals = relationship("Referral", back_populates="partner", order_by="Referral.id")

    def __repr__(self):
        return f"<Partner {self.id} {self.name}>"


class Referral(FeeRule, db.Model):
    """A client, or a single job, referred by a partner from a date; may end on a date or after N paid jobs."""

    __tablename__ = "referrals"
    __table_args__ = (
        CheckConstraint("(client_id IS NULL) <> (job_id IS NULL)", name="client_or_job"),
        CheckConstraint("max_paid_jobs IS NULL OR max_paid_jobs > 0", name="max_paid_jobs_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), index=True)
    client_id: Mapped[int | None] = mapped_column(ForeignKey("clients.id"), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), index=True)
    starts_on = mapped_column(Date, nullable=False)
    ends_on = mapped_column(Date, nullable=True)  # last day it counts, in the business time zone
    max_paid_jobs: Mapped[int | None] = mapped_column(nullable=True)
    ended_at = mapped_column(UTCDateTime, nullable=True)  # ended by hand
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)

    partner = relationship("Partner", back_populates="referrals")
    client = relationship("Client")
    job = relationship("Job", foreign_keys=[job_id])


class PayoutStatus(str, enum.Enum):
    PENDING = "pending"  # computed; the transfer is queued
    HELD = "held"  # inside the hold period, or held by a dispute
    HELD_NO_ACCOUNT = "held_no_account"  # waits for the partner's connected account
    PAID = "paid"  # transferred
    FAILED = "failed"  # attempts exhausted or refused: Retry
    REVERSED = "reversed"  # transferred, then fully reversed
    CANCELLED = "cancelled"  # never transferred: refunded or disputed first


class Payout(db.Model):
    """A partner's fee for one paid job: the ledger row, unique per job and partner."""

    __tablename__ = "payouts"
    __table_args__ = (
        UniqueConstraint("job_id", "partner_id", name="uq_payouts_job_partner"),
        CheckConstraint("amount >= 0 AND amount <= amount_paid", name="fee_within_paid"),
        CheckConstraint("amount_reversed >= 0 AND amount_reversed <= amount", name="reversal_within_fee"),
        Index("ix_payouts_status_hold_until", "status", "hold_until"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), index=True)
    referral_id: Mapped[int] = mapped_column(ForeignKey("referrals.id"), index=True)
    billing_record_id: Mapped[int] = mapped_column(ForeignKey("billing_records.id"), index=True)
    currency: Mapped[str] = mapped_column(String(3))
    amount_paid: Mapped[int] = mapped_column()  # what the customer paid for the job
    fee_base_amount: Mapped[int] = mapped_column()  # the amount the fee is computed on
    amount: Mapped[int] = mapped_column()  # the fee
    amount_reversed: Mapped[int] = mapped_column(default=0)
    rule: Mapped[dict] = mapped_column(JSON, default=dict)  # the fee rule as applied, for the accountant
    status: Mapped[PayoutStatus] = mapped_column(_enum(PayoutStatus), default=PayoutStatus.PENDING, index=True)
    hold_until = mapped_column(UTCDateTime, nullable=True)
    source_charge_id: Mapped[str | None] = mapped_column(String(64))
    stripe_transfer_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    rq_job_id: Mapped[str | None] = mapped_column(String(100))
    paid_on = mapped_column(UTCDateTime, nullable=False)  # when the customer's payment was confirmed
    transferred_at = mapped_column(UTCDateTime, nullable=True)
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    updated_at = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow, nullable=False)

    job = relationship("Job")
    partner = relationship("Partner")
    referral = relationship("Referral")
    billing_record = relationship("BillingRecord")
    entries = relationship("PayoutEntry", back_populates="payout", order_by="PayoutEntry.id")

    @property
    def net(self):
        return self.amount - self.amount_reversed


class EntryKind(str, enum.Enum):
    ACCRUED = "accrued"  # fee computed on a confirmed payment
    HELD = "held"
    RELEASED = "released"
    TRANSFERRED = "transferred"
    TRANSFER_FAILED = "transfer_failed"
    REVERSED = "reversed"  # amount: what this step reversed
    CANCELLED = "cancelled"


class PayoutEntry(db.Model):
    """One step of a payout. `ref` makes each step idempotent: the same step twice is one row."""

    __tablename__ = "payout_entries"
    __table_args__ = (UniqueConstraint("payout_id", "kind", "ref", name="uq_payout_entries_step"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    payout_id: Mapped[int] = mapped_column(ForeignKey("payouts.id"), index=True)
    kind: Mapped[EntryKind] = mapped_column(_enum(EntryKind))
    ref: Mapped[str] = mapped_column(String(120))  # event id, transfer or reversal id, attempt number
    amount: Mapped[int] = mapped_column(default=0)
    stripe_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)

    payout = relationship("Payout", back_populates="entries")
