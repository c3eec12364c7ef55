"""Partners, who referred what, and reading the payout ledger (issue 6).

The write side here is the office's: partner setup with its login, fee rules, attribution. Fees,
transfers, holds and reversals are `settlement.py`'s. The read side answers the ledger page and the
partner portal with SQL aggregates, and never hands a partner a customer's contact details.
"""
import csv
import enum
import io
from dataclasses import dataclass
from datetime import date, timedelta

from email_validator import EmailNotValidError, validate_email
from flask import abort
from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import joinedload

from portal.audit.services import record, record_changes
from portal.auth.models import Role
from portal.auth.sessions import end_all_sessions
from portal.auth.services import MIN_PASSWORD_LENGTH, create_user, deactivate_user, find_user_by_email
from portal.clients.models import Client
from portal.clients.services import CLIENT_CURRENCIES
from portal.errors import TransitionNotAllowed, Unprocessable
from portal.extensions import db, is_row_id
from portal.jobs.models import Job
from portal.money import format_money
from portal.referrals.models import DisputePolicy, FeeBase, FeeKind, Partner, Payout, PayoutStatus, Referral
from portal.timeutil import business_zone, day_end_utc, day_start_utc, to_business_time, utcnow

MAX_BASIS_POINTS = 10_000  # 100 %
MAX_HOLD_DAYS = 365
MAX_PAID_JOBS = 10_000
FEE_RULE_FIELDS = ("fee_kind", "fee_basis_points", "fee_flat", "fee_base", "fee_minimum", "fee_cap")
PARTNER_FIELDS = ("name", "contact_name", "email", "phone", "currency", "hold_days", "dispute_policy", "active")

# What the office still owes a partner, and what has gone out (net of reversals).
OWED_STATUSES = (PayoutStatus.PENDING, PayoutStatus.HELD, PayoutStatus.HELD_NO_ACCOUNT, PayoutStatus.FAILED)
PAID_STATUSES = (PayoutStatus.PAID, PayoutStatus.REVERSED)


# --- Loading, scoped by who asks ----------------------------------------------------------------------

def partner_of(user):
    """The partner row behind a partner's login; 404 when the login has none (or is not a partner)."""
    partner = None
    if user.role == Role.PARTNER:
        partner = db.session.scalar(select(Partner).where(Partner.user_id == user.id))
    if partner is None:
        abort(404)
    return partner


def get_partner_for(user, partner_id):
    """The partner: any for staff, only their own for a partner; 404 otherwise."""
    partner = db.session.get(Partner, partner_id) if is_row_id(partner_id) else None
    if partner is None or not (user.is_staff or (user.role == Role.PARTNER and partner.user_id == user.id)):
        abort(404)
    return partner


def get_payout_for(user, payout_id):
    """The payout: any for staff, only their own partner's for a partner; 404 otherwise."""
    payout = db.session.get(Payout, payout_id) if is_row_id(payout_id) else None
    if payout is None:
        abort(404)
    if not user.is_staff:
        get_partner_for(user, payout.partner_id)
    return payout


def get_referral_for(user, partner, referral_id):
    """One of this partner's referrals, for staff; 404 for another partner's."""
    referral = db.session.get(Referral, referral_id) if user.is_staff and is_row_id(referral_id) else None
    if referral is None or referral.partner_id != partner.id:
        abort(404)
    return referral


def partner_choices(*, include=None):
    """(id, name) of active partners for pickers, plus `include` (a current, maybe inactive, choice)."""
    query = select(Partner.id, Partner.name).order_by(Partner.name, Partner.id)
    include = include if is_row_id(include) else None  # a number from a URL PostgreSQL would refuse to compare
    query = query.where(or_(Partner.active.is_(True), Partner.id == include) if include else Partner.active.is_(True))
    return db.session.execute(query).all()


def all_partners():
    """Every partner with what is owed to them, by name: one grouped query, not a loop over payouts."""
    owed = (select(Payout.partner_id, func.sum(Payout.amount - Payout.amount_reversed).label("owed"))
            .where(Payout.status.in_(OWED_STATUSES)).group_by(Payout.partner_id).subquery())
    rows = db.session.execute(select(Partner, func.coalesce(owed.c.owed, 0))
                              .outerjoin(owed, owed.c.partner_id == Partner.id)
                              .order_by(Partner.active.desc(), Partner.name, Partner.id)).all()
    return [(partner, amount) for partner, amount in rows]


# --- Validation -----------------------------------------------------------------------------------------

def fee_rule_errors(rule, *, override):
    """Per-field messages for a fee rule (NULLs allowed in an override: they mean "the partner's")."""
    errors = {}
    kind, basis_points, flat = rule.get("fee_kind"), rule.get("fee_basis_points"), rule.get("fee_flat")
    if kind is None and not override:
        errors["fee_kind"] = "Choose a percentage or a flat fee."
    if kind is None and override and (basis_points is not None or flat is not None):
        errors["fee_kind"] = "Choose whether the override is a percentage or a flat fee."
    if kind == FeeKind.PERCENT and basis_points is None:
        errors["fee_basis_points"] = "Give the percentage."
    if basis_points is not None and not 0 <= basis_points <= MAX_BASIS_POINTS:
        errors["fee_basis_points"] = "The percentage must be from 0 to 100."
    if kind == FeeKind.FLAT and flat is None:
        errors["fee_flat"] = "Give the flat fee."
    if flat is not None and flat < 0:
        errors["fee_flat"] = "The flat fee must not be negative."
    for field, label in (("fee_minimum", "minimum"), ("fee_cap", "cap")):
        if rule.get(field) is not None and rule[field] < 0:
            errors[field] = f"The {label} must not be negative."
    minimum, cap = rule.get("fee_minimum"), rule.get("fee_cap")
    if minimum is not None and cap is not None and minimum > cap and "fee_cap" not in errors:
        errors["fee_cap"] = "The cap must be at least the minimum."
    return errors


def clean_fee_rule(rule, *, override):
    """The rule's columns, with values of the other kind cleared; the caller reports fee_rule_errors first."""
    clean = {field: rule.get(field) for field in FEE_RULE_FIELDS}
    for field, kind in (("fee_kind", FeeKind), ("fee_base", FeeBase)):
        if isinstance(clean[field], str):
            clean[field] = kind(clean[field]) if clean[field] else None
    if clean["fee_kind"] == FeeKind.PERCENT:
        clean["fee_flat"] = None
        if clean["fee_base"] is None and not override:
            clean["fee_base"] = FeeBase.SUBTOTAL
    elif clean["fee_kind"] == FeeKind.FLAT:
        clean["fee_basis_points"] = None
    return clean


def _enum_or_error(kind, value, field, message, errors):
    try:
        return kind(value) if value not in (None, "") else None
    except ValueError:
        errors[field] = message
        return None


def _email_or_error(value, errors, field="email"):
    value = (value or "").strip()
    if not value:
        errors[field] = "Give the partner's email: it is also their login."
        return value
    try:
        # Deliverability means a DNS lookup: slow, and offline in tests and on a laptop.
        return validate_email(value, check_deliverability=False).normalized.lower()
    except EmailNotValidError as error:
        errors[field] = f"Not a valid email address ({str(error).rstrip('.')})."
        return value


def clean_partner_fields(fields, errors):
    """Validated, normalised partner columns; messages for bad ones go into `errors`."""
    clean = {}
    clean["name"] = (fields.get("name") or "").strip()[:200]
    if not clean["name"]:
        errors["name"] = "The partner needs a name."
    clean["contact_name"] = (fields.get("contact_name") or "").strip()[:120]
    clean["email"] = _email_or_error(fields.get("email"), errors)
    clean["phone"] = (fields.get("phone") or "").strip()[:40]
    clean["currency"] = (fields.get("currency") or "usd").strip().lower()
    if clean["currency"] not in CLIENT_CURRENCIES:
        errors["currency"] = f"Currency must be one of {', '.join(c.upper() for c in CLIENT_CURRENCIES)}."
    hold_days = fields.get("hold_days", 0)
    if hold_days is None or isinstance(hold_days, bool) or not 0 <= hold_days <= MAX_HOLD_DAYS:
        errors["hold_days"] = f"Hold days must be a whole number from 0 to {MAX_HOLD_DAYS}."
    clean["hold_days"] = hold_days
    clean["dispute_policy"] = _enum_or_error(DisputePolicy, fields.get("dispute_policy") or DisputePolicy.HOLD,
                                             "dispute_policy", "Choose what a dispute does.", errors)
    clean["active"] = bool(fields.get("active", True))
    rule = {field: fields.get(field) for field in FEE_RULE_FIELDS}
    rule["fee_kind"] = _enum_or_error(FeeKind, rule["fee_kind"], "fee_kind", "Choose a percentage or a flat fee.",
                                      errors)
    rule["fee_base"] = _enum_or_error(FeeBase, rule["fee_base"], "fee_base", "Choose what the percentage is of.",
                                      errors)
    errors.update({field: message for field, message in fee_rule_errors(rule, override=False).items()
                   if field not in errors})
    clean.update(clean_fee_rule(rule, override=False))
    return clean


def _login_errors(email, password, errors, *, user=None, password_required):
    if "email" not in errors:
        holder = find_user_by_email(email)
        if holder is not None and (user is None or holder.id != user.id):
            errors["email"] = "That email already has a login."
    if password or password_required:
        if len(password or "") < MIN_PASSWORD_LENGTH:
            errors["password"] = f"Passwords need at least {MIN_PASSWORD_LENGTH} characters."


def _refuse(errors):
    raise Unprocessable("Nothing was saved: check the highlighted fields.", errors)


# --- Partners -------------------------------------------------------------------------------------------

def create_partner(*, by, password, **fields):
    """A new partner with its partner-role login and default fee rule; refuses naming every bad field."""
    unknown = set(fields) - set(PARTNER_FIELDS) - set(FEE_RULE_FIELDS)
    if unknown:
        raise TypeError(f"not partner fields: {', '.join(sorted(unknown))}")
    errors = {}
    clean = clean_partner_fields(fields, errors)
    _login_errors(clean["email"], password, errors, password_required=True)
    if errors:
        _refuse(errors)
    user = create_user(email=clean["email"], name=clean["contact_name"] or clean["name"], role=Role.PARTNER,
                       password=password)
    user.active = clean["active"]
    partner = Partner(user=user, **clean)
    db.session.add(partner)
    db.session.flush()
    record(by, "partner.created", partner, detail={
        "name": partner.name, "login": user.email, "fee": describe_fee_rule(partner, partner.currency),
        "hold_days": partner.hold_days, "dispute_policy": partner.dispute_policy.value})
    return partner


def update_partner(partner, *, by, password=None, **fields):
    """Change a partner's contact, login, fee rule, hold or dispute policy; one audit entry per change."""
    errors = {}
    clean = clean_partner_fields(fields, errors)
    user = partner.user
    _login_errors(clean["email"], password, errors, user=user, password_required=user is None)
    if errors:
        _refuse(errors)
    changes = {field: (getattr(partner, field), value) for field, value in clean.items()}
    for field, (old, new) in changes.items():
        if old != new:
            setattr(partner, field, new)
    record_changes(by, partner, {field: (_audit_text(old), _audit_text(new)) for field, (old, new) in changes.items()},
                   action="partner.updated")
    if user is None:
        partner.user = create_user(email=clean["email"], name=clean["contact_name"] or clean["name"],
                                   role=Role.PARTNER, password=password)
        record(by, "partner.login_created", partner, new=clean["email"])
        return partner
    if user.email != clean["email"]:
        record(by, "partner.login_changed", partner, field="login", old=user.email, new=clean["email"])
        user.email = clean["email"]
    if user.active and not partner.active:
        deactivate_user(user, by=by)  # an inactive partner cannot sign in, and is signed out everywhere now
    elif partner.active and not user.active:
        user.active = True
        record(by, "user.reactivated", user, field="active", old=False, new=True)
    if password:
        user.set_password(password)
        end_all_sessions(user, "password_changed")  # a reset password also signs out whoever had the old one
        record(by, "partner.password_set", partner)
    return partner


def _audit_text(value):
    return value.value if isinstance(value, enum.Enum) else value


def describe_fee_rule(rule, currency):
    """"10.00 % of the pre-tax subtotal, min $5.00, cap $50.00"-style text for a partner's or an override's rule."""
    if rule.fee_kind == FeeKind.PERCENT:
        base = {FeeBase.SUBTOTAL: "the pre-tax subtotal", FeeBase.TOTAL: "the total paid"}.get(rule.fee_base,
                                                                                             "the partner's base")
        text = f"{rule.fee_basis_points / 100:.2f} % of {base}"
    elif rule.fee_kind == FeeKind.FLAT:
        text = f"{format_money(rule.fee_flat, currency)} per paid job"
    else:
        text = "the partner's fee"
    if rule.fee_minimum is not None:
        text += f", min {format_money(rule.fee_minimum, currency)}"
    if rule.fee_cap is not None:
        text += f", cap {format_money(rule.fee_cap, currency)}"
    return text


def has_fee_override(referral):
    return any(getattr(referral, field) is not None for field in FEE_RULE_FIELDS)


# --- Attribution ----------------------------------------------------------------------------------------

def business_today():
    """Today's date on the business's calendar."""
    return to_business_time(utcnow()).date()


def _paid_jobs_counted(referral_id):
    """Payouts that count toward a referral's first-N-paid-jobs limit (cancelled ones do not)."""
    return db.session.scalar(select(func.count(Payout.id)).where(Payout.referral_id == referral_id,
                                                                Payout.status != PayoutStatus.CANCELLED))


def is_open(referral, *, on=None):
    """Whether the referral still counts from `on` (default today) onward: not ended by hand, by date or by N."""
    on = on or business_today()
    if referral.ended_at is not None or (referral.ends_on is not None and referral.ends_on < on):
        return False
    return referral.max_paid_jobs is None or _paid_jobs_counted(referral.id) < referral.max_paid_jobs


def overlapping_referral(*, client=None, job=None, starts_on, ends_on, ignore=None):
    """An open referral of the same client or job whose dates overlap these; None when there is none."""
    query = select(Referral).where(Referral.ended_at.is_(None),
                                   or_(Referral.ends_on.is_(None), Referral.ends_on >= starts_on))
    query = query.where(Referral.client_id == client.id) if client is not None else query.where(
        Referral.job_id == job.id)
    if ends_on is not None:
        query = query.where(Referral.starts_on <= ends_on)
    if ignore is not None:
        query = query.where(Referral.id != ignore.id)
    return next((referral for referral in db.session.scalars(query.order_by(Referral.id))
                 if referral.max_paid_jobs is None or _paid_jobs_counted(referral.id) < referral.max_paid_jobs), None)


def referral_errors(partner, *, client, job, starts_on, ends_on, max_paid_jobs, rule):
    """Per-field messages for a new referral; empty when it can be added."""
    errors = {}
    if (client is None) == (job is None):
        errors["target"] = "A referral is for a client or for a single job."
    if not partner.active:
        errors["partner_id"] = f"{partner.name} is inactive."
    if starts_on is None:
        errors["starts_on"] = "Say from which day the referral counts."
    if ends_on is not None and starts_on is not None and ends_on < starts_on:
        errors["ends_on"] = "The end date must not be before the start date."
    if max_paid_jobs is not None and not 1 <= max_paid_jobs <= MAX_PAID_JOBS:
        errors["max_paid_jobs"] = f"The number of paid jobs must be from 1 to {MAX_PAID_JOBS}."
    errors.update(fee_rule_errors(rule, override=True))
    if not errors:
        clash = overlapping_referral(client=client, job=job, starts_on=starts_on, ends_on=ends_on)
        if clash is not None:
            target = f"{client.name}" if client is not None else f"job {job.number}"
            errors["partner_id"] = (f"{target} is already referred by {clash.partner.name} from "
                                    f"{clash.starts_on:%b %d, %Y}; end that referral first.")
    return errors


def add_referral(partner, *, by, client=None, job=None, starts_on, ends_on=None, max_paid_jobs=None, **rule):
    """A client, or a single job, referred by `partner` from `starts_on`; optionally until a date or N paid jobs."""
    unknown = set(rule) - set(FEE_RULE_FIELDS)
    if unknown:
        raise TypeError(f"not fee rule fields: {', '.join(sorted(unknown))}")
    rule = clean_fee_rule(rule, override=True)
    errors = referral_errors(partner, client=client, job=job, starts_on=starts_on, ends_on=ends_on,
                             max_paid_jobs=max_paid_jobs, rule=rule)
    if errors:
        message = errors.get("partner_id") or errors.get("target") or "Nothing was saved: check the referral."
        raise Unprocessable(message, errors)
    referral = Referral(partner=partner, client=client, job=job, starts_on=starts_on, ends_on=ends_on,
                        max_paid_jobs=max_paid_jobs, created_by_id=getattr(by.user, "id", None), **rule)
    db.session.add(referral)
    db.session.flush()
    record(by, "referral.added", referral, job=job, detail={
        "partner": partner.name, "client_id": client.id if client else None, "job_id": job.id if job else None,
        "starts_on": starts_on.isoformat(), "ends_on": ends_on.isoformat() if ends_on else None,
        "max_paid_jobs": max_paid_jobs, "fee": describe_fee_rule(referral, partner.currency)
        if has_fee_override(referral) else None})
    return referral


def end_referral(referral, *, by):
    """Stop a referral by hand: jobs billed from now on no longer earn its partner a fee."""
    if referral.ended_at is not None:
        raise TransitionNotAllowed("That referral has already ended.")
    referral.ended_at = utcnow()
    record(by, "referral.ended", referral, job=referral.job, detail={"partner": referral.partner.name})
    return referral


def open_client_referral(client):
    """The client's referral in force today or later (the one the client form edits); None if there is none."""
    referrals = db.session.scalars(select(Referral).where(Referral.client_id == client.id,
                                                          Referral.ended_at.is_(None))
                                   .order_by(Referral.starts_on.desc(), Referral.id.desc())).all()
    return next((referral for referral in referrals if is_open(referral)), None)


def set_client_referral(client, *, by, partner, starts_on=None, ends_on=None, max_paid_jobs=None):
    """Make `partner` (or nobody) the client's referrer, as the client form says; errors are keyed `referral_*`."""
    current = open_client_referral(client)
    if current is not None and partner is not None and current.partner_id == partner.id:
        if (current.starts_on, current.ends_on, current.max_paid_jobs) == (starts_on or current.starts_on, ends_on,
                                                                           max_paid_jobs):
            return current
    if current is None and partner is None:
        return None
    if current is not None:
        end_referral(current, by=by)
    if partner is None:
        return None
    try:
        return add_referral(partner, by=by, client=client, starts_on=starts_on or business_today(),
                            ends_on=ends_on, max_paid_jobs=max_paid_jobs)
    except Unprocessable as refusal:
        raise Unprocessable(refusal.message, {f"referral_{field}": message
                                              for field, message in refusal.fields.items()}) from None


def referrals_of(partner):
    """The partner's referrals, newest first, with their client or job loaded."""
    return db.session.scalars(select(Referral).where(Referral.partner_id == partner.id)
                              .options(joinedload(Referral.client), joinedload(Referral.job))
                              .order_by(Referral.ended_at.is_(None).desc(), Referral.starts_on.desc(),
                                        Referral.id.desc())).all()


def job_referrals(job):
    """The referrals made for this job alone, newest first."""
    return db.session.scalars(select(Referral).where(Referral.job_id == job.id)
                              .order_by(Referral.id.desc())).all()


@dataclass
class JobReferral:
    """Who referred a job: fixed at billing (the live record's referral), or who would be credited today."""

    referral: Referral | None
    fixed: bool  # True once the job is billed: the live record carries its referral


def referral_of_job(job):
    """The job's referring partner: its live billing record's referral, or the one in force before billing."""
    record = job.live_billing_record
    if record is not None:
        return JobReferral(record.referral, True)
    from portal.referrals.attribution import referral_for_job

    on = to_business_time(job.completed_at).date() if job.completed_at else business_today()
    return JobReferral(referral_for_job(job, on=on), False)


# --- The payouts ledger ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class LedgerFilters:
    """The ledger's filters; None means "any"."""

    partner_id: int | None = None
    status: PayoutStatus | None = None
    paid_from: date | None = None  # business dates, inclusive
    paid_to: date | None = None

    def apply(self, query):
        if self.partner_id is not None:
            query = query.where(Payout.partner_id == self.partner_id)
        if self.status is not None:
            query = query.where(Payout.status == self.status)
        if self.paid_from is not None:
            query = query.where(Payout.paid_on >= day_start_utc(self.paid_from))
        if self.paid_to is not None:
            query = query.where(Payout.paid_on < day_end_utc(self.paid_to))
        return query


def ledger_query(filters=LedgerFilters()):
    """Payouts matching the filters, newest payment first, with their job and partner loaded."""
    query = select(Payout).options(joinedload(Payout.job).joinedload(Job.client), joinedload(Payout.partner))
    return filters.apply(query).order_by(Payout.paid_on.desc(), Payout.id.desc())


@dataclass(frozen=True)
class LedgerTotal:
    currency: str
    owed: int  # pending + held + held: no account + failed, net of reversals
    paid: int  # transferred, net of reversals
    count: int


def ledger_totals(filters=LedgerFilters()):
    """Owed and paid per currency for the filtered payouts, in one grouped query."""
    net = Payout.amount - Payout.amount_reversed
    query = select(Payout.currency,
                   func.coalesce(func.sum(case((Payout.status.in_(OWED_STATUSES), net), else_=0)), 0),
                   func.coalesce(func.sum(case((Payout.status.in_(PAID_STATUSES), net), else_=0)), 0),
                   func.count(Payout.id)).group_by(Payout.currency).order_by(Payout.currency)
    return [LedgerTotal(currency, int(owed), int(paid), count)
            for currency, owed, paid, count in db.session.execute(filters.apply(query))]


def payouts_needing_attention():
    """Failed transfers (Retry) and payouts waiting for a connected account, oldest first."""
    return db.session.scalars(select(Payout).options(joinedload(Payout.job), joinedload(Payout.partner))
                              .where(Payout.status.in_((PayoutStatus.FAILED, PayoutStatus.HELD_NO_ACCOUNT)))
                              .order_by(Payout.status, Payout.paid_on, Payout.id)).all()


CSV_HEADER = ("paid_on", "job_number", "client", "currency", "fee_base_amount", "fee", "reversed", "net", "status")


def _major(amount):
    """Minor units as a plain decimal string for spreadsheets ("1234.50"); no floats."""
    sign = "-" if amount < 0 else ""
    return f"{sign}{abs(amount) // 100}.{abs(amount) % 100:02d}"


def _cell(text):
    """Text a spreadsheet will not run as a formula (a client named "=HYPERLINK(…)" stays text)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def ledger_csv(payouts, *, with_partner):
    """The rows as CSV text: the accountant's columns, no customer contact details."""
    output = io.StringIO()
    writer = csv.writer(output)
    writer.writerow((("partner",) if with_partner else ()) + CSV_HEADER)
    for payout in payouts:
        row = (to_business_time(payout.paid_on).date().isoformat(), payout.job.number, _cell(payout.job.client.name),
               payout.currency.upper(), _major(payout.fee_base_amount), _major(payout.amount),
               _major(payout.amount_reversed), _major(payout.net), payout.status.value)
        writer.writerow(((_cell(payout.partner.name),) if with_partner else ()) + row)
    return output.getvalue()


# --- The partner portal ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class PortalJob:
    """One paid job as a partner sees it: no address, contact or note ever reaches this."""

    payout_id: int
    paid_on: object
    job_number: str
    client_name: str
    currency: str
    fee_base_amount: int
    fee: int
    reversed: int
    status: PayoutStatus

    @property
    def net(self):
        return self.fee - self.reversed


@dataclass(frozen=True)
class StatusTotals:
    currency: str
    pending: int  # computed, on its way (a failed transfer is still on its way as far as the partner knows)
    held: int  # inside a hold, a dispute, or waiting for the partner's Stripe account
    paid: int  # transferred, net of reversals
    reversed: int  # taken back after refunds or disputes


@dataclass(frozen=True)
class MonthEarnings:
    month: str  # "2026-11"
    currency: str
    jobs: int
    earned: int  # fees net of reversals; cancelled payouts earn nothing

    @property
    def label(self):
        return date.fromisoformat(self.month + "-01").strftime("%B %Y")


def referred_clients(partner):
    """Names (only) of the clients this partner referred, directly or through a single job, with since when."""
    client_referrals = (select(Client.name.label("name"), Referral.starts_on.label("since"))
                        .join(Referral, Referral.client_id == Client.id).where(Referral.partner_id == partner.id))
    job_referrals = (select(Client.name.label("name"), Referral.starts_on.label("since")).select_from(Referral)
                     .join(Job, Job.id == Referral.job_id).join(Client, Client.id == Job.client_id)
                     .where(Referral.partner_id == partner.id))
    both = client_referrals.union_all(job_referrals).subquery()
    return db.session.execute(select(both.c.name, func.min(both.c.since)).group_by(both.c.name)
                              .order_by(both.c.name)).all()


def portal_jobs(partner):
    """The partner's paid jobs, newest first, as plain rows with only what a partner may see."""
    rows = db.session.execute(
        select(Payout.id, Payout.paid_on, Job.number, Client.name, Payout.currency, Payout.fee_base_amount,
               Payout.amount, Payout.amount_reversed, Payout.status)
        .join(Job, Job.id == Payout.job_id).join(Client, Client.id == Job.client_id)
        .where(Payout.partner_id == partner.id).order_by(Payout.paid_on.desc(), Payout.id.desc()))
    return [PortalJob(*row) for row in rows]


def portal_status_totals(partner):
    """Pending, held, paid and reversed per currency, in one grouped query."""
    net = Payout.amount - Payout.amount_reversed

    def total_of(*statuses):
        return func.coalesce(func.sum(case((Payout.status.in_(statuses), net), else_=0)), 0)

    rows = db.session.execute(
        select(Payout.currency, total_of(PayoutStatus.PENDING, PayoutStatus.FAILED),
               total_of(PayoutStatus.HELD, PayoutStatus.HELD_NO_ACCOUNT), total_of(*PAID_STATUSES),
               func.coalesce(func.sum(Payout.amount_reversed), 0))
        .where(Payout.partner_id == partner.id).group_by(Payout.currency).order_by(Payout.currency))
    return [StatusTotals(currency, *(int(value) for value in values)) for currency, *values in rows]


def _month_of_payment():
    """SQL for the business-calendar month ("2026-11") of a payout's payment."""
    zone = business_zone()
    if db.engine.dialect.name == "postgresql":
        return func.to_char(func.timezone(zone.key, Payout.paid_on), "YYYY-MM")
    # SQLite (the demo) has no time zones: shift by the zone's offset now, which is off by an hour
    # around a daylight-saving change, and only for payments in that hour of a month's first day.
    offset = int(utcnow().astimezone(zone).utcoffset() / timedelta(minutes=1))
    return func.strftime("%Y-%m", Payout.paid_on, f"{offset:+d} minutes")


def monthly_earnings(partner):
    """Fees earned per business-calendar month, newest first: SQL grouping, not a Python loop."""
    month = _month_of_payment().label("month")
    rows = db.session.execute(
        select(month, Payout.currency, func.count(Payout.id), func.sum(Payout.amount - Payout.amount_reversed))
        .where(Payout.partner_id == partner.id, Payout.status != PayoutStatus.CANCELLED)
        .group_by(month, Payout.currency).order_by(month.desc(), Payout.currency))
    return [MonthEarnings(month, currency, count, int(earned)) for month, currency, count, earned in rows]


def partner_csv(partner):
    """The partner's earnings export: their own payouts only, with client names and nothing more about them."""
    payouts = db.session.scalars(select(Payout).options(joinedload(Payout.job).joinedload(Job.client))
                                 .where(Payout.partner_id == partner.id)
                                 .order_by(Payout.paid_on.desc(), Payout.id.desc())).all()
    return ledger_csv(payouts, with_partner=False)
