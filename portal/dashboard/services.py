"""The dashboard's figures, each one SQL aggregate whatever the number of rows.

Every figure is defined once, as a condition on billing records (or jobs, or payouts): the
aggregates count and sum what matches it, and the office job list shows the jobs that match the
very same condition (`figure_jobs_condition`), so a figure's link lists exactly what it counted.

Who sees what: the office sees the operational parts (what needs a person: drafts awaiting
approval, billing and payment failures, overdue and aging, billing lag, webhook health); the owner
also sees the cash figures (invoiced, paid, outstanding, refunds and disputes), the billed vs
collected trend and referral fees, and alone reaches the exports and the audit log.
"""
import math
from dataclasses import dataclass, field
from datetime import date, timedelta

from sqlalchemy import and_, case, func, literal, or_, select, union_all
from sqlalchemy.dialects import postgresql

from portal.auth.models import Role
from portal.billing.models import BillingRecord as R, BillingStatus as S
from portal.extensions import db
from portal.jobs.models import Job, job_assignments
from portal.payments.models import EventStatus, WebhookEvent
from portal.referrals.models import Payout, PayoutStatus
from portal.timeutil import day_end_utc, day_start_utc, to_business_time, utcnow

OPEN_STATUSES = (S.SENT, S.PROCESSING, S.PAYMENT_FAILED, S.OVERDUE)  # the customer still owes it
FEES_OWED_STATUSES = (PayoutStatus.PENDING, PayoutStatus.HELD, PayoutStatus.HELD_NO_ACCOUNT, PayoutStatus.FAILED)
FEES_PAID_STATUSES = (PayoutStatus.PAID, PayoutStatus.REVERSED)  # counted net of amount_reversed
PERIODS = {"today": "Today", "week": "This week", "month": "This month", "range": "Dates"}
DAILY_UP_TO_DAYS = 31
WEEKLY_UP_TO_DAYS = 26 * 7


# --- The period and the filters ------------------------------------------------------------------

@dataclass(frozen=True)
class Period:
    """Whole business days, first_day to last_day inclusive, in BUSINESS_TIMEZONE."""

    key: str
    first_day: date
    last_day: date

    @property
    def start(self):
        return day_start_utc(self.first_day)

    @property
    def end(self):
        return day_end_utc(self.last_day)  # exclusive

    @property
    def days(self):
        return (self.last_day - self.first_day).days + 1

    @property
    def label(self):
        if self.first_day == self.last_day:
            return f"{self.first_day:%a %b %d, %Y}"
        return f"{self.first_day:%b %d, %Y} – {self.last_day:%b %d, %Y}"


def business_today(now=None):
    """Today's date in the business's time zone."""
    return to_business_time(now or utcnow()).date()


def period_for(key, *, today, first_day=None, last_day=None):
    """Today, this week (from Monday), this month, or a chosen range (swapped if typed backwards)."""
    if key == "today":
        return Period(key, today, today)
    if key == "week":
        return Period(key, today - timedelta(days=today.weekday()), today)
    if key == "range" and first_day and last_day:
        first_day, last_day = sorted((first_day, last_day))
        return Period(key, first_day, last_day)
    return Period("month", today.replace(day=1), today)


@dataclass(frozen=True)
class Scope:
    """Which jobs the figures cover: all, one client's, or one crew member's."""

    client_id: int | None = None
    crew_id: int | None = None

    def conditions(self, job_id):
        """Conditions on a job id column; semi-joins, so aggregates need no join to jobs."""
        found = []
        if self.client_id:
            found.append(job_id.in_(select(Job.id).where(Job.client_id == self.client_id)))
        if self.crew_id:
            found.append(job_id.in_(select(job_assignments.c.job_id).where(job_assignments.c.user_id == self.crew_id)))
        return found


# --- What each figure counts ---------------------------------------------------------------------

def in_period(column, period):
    return and_(column >= period.start, column < period.end)


def outstanding():
    return and_(R.live.is_(True), R.status.in_(OPEN_STATUSES))


def aging_edges(today):
    """Due-date boundaries, as instants: the starts of today and of 30, 60 and 90 days ago (business time)."""
    return [day_start_utc(today - timedelta(days=days)) for days in (0, 30, 60, 90)]


@dataclass(frozen=True)
class AgingBucket:
    key: str
    label: str


AGING_BUCKETS = (
    AgingBucket("aging_current", "Current"),
    AgingBucket("aging_1_30", "1–30 days"),
    AgingBucket("aging_31_60", "31–60 days"),
    AgingBucket("aging_61_90", "61–90 days"),
    AgingBucket("aging_90_plus", "90+ days"),
)


def aging_conditions(today):
    """Bucket → condition on an outstanding record's due date; days late = today − due date, in business days."""
    today_start, back_30, back_60, back_90 = aging_edges(today)
    return {
        "aging_current": or_(R.due_at.is_(None), R.due_at >= today_start),
        "aging_1_30": and_(R.due_at < today_start, R.due_at >= back_30),
        "aging_31_60": and_(R.due_at < back_30, R.due_at >= back_60),
        "aging_61_90": and_(R.due_at < back_60, R.due_at >= back_90),
        "aging_90_plus": R.due_at < back_90,
    }


@dataclass(frozen=True)
class FigureSpec:
    key: str
    label: str
    owner_only: bool
    in_period: bool  # counts what happened in the period; otherwise it is the state now


HEADLINES = (
    FigureSpec("invoiced", "Invoiced", True, True),
    FigureSpec("paid", "Paid", True, True),
    FigureSpec("outstanding", "Outstanding", True, False),
    FigureSpec("overdue", "Overdue", False, False),
    FigureSpec("drafts", "Drafts awaiting approval", False, False),
    FigureSpec("billing_failures", "Billing failures", False, False),
    FigureSpec("payment_failures", "Payment failures", False, False),
    FigureSpec("refunds", "Refunds", True, True),
    FigureSpec("disputes", "Disputes", True, True),
)
FEE_FIGURES = (
    FigureSpec("fees_owed", "Referral fees owed", True, False),
    FigureSpec("fees_paid", "Referral fees paid", True, True),
)
FIGURE_LABELS = {spec.key: spec.label for spec in HEADLINES + FEE_FIGURES} | {
    bucket.key: f"Outstanding, {bucket.label.lower()} past due" if bucket.key != "aging_current"
    else "Outstanding, not yet due" for bucket in AGING_BUCKETS}


def flow_figures(period):
    """Figure → (condition on billing records, the amount it sums), for what happened in the period."""
    return {
        # A voided record was never owed (a re-bill would count twice); a written-off one was.
        "invoiced": (and_(in_period(R.sent_at, period), R.status != S.VOID), R.total),
        "paid": (in_period(R.paid_at, period), R.amount_paid),
        "refunds": (in_period(R.refunded_at, period), R.amount_refunded),
        "disputes": (in_period(R.disputed_at, period), R.amount_paid),
    }


def flows_prefilter(period):
    """Rows any flow figure may count: each milestone in the period (index range scans, OR-ed)."""
    return or_(*(in_period(column, period) for column in (R.sent_at, R.paid_at, R.refunded_at, R.disputed_at)))


def state_figures(today):
    """Figure → (condition on billing records, the amount it sums), for the state now."""
    unpaid = R.total - R.amount_paid
    return {
        "outstanding": (outstanding(), unpaid),
        "overdue": (and_(outstanding(), R.due_at < aging_edges(today)[0]), unpaid),
        "drafts": (and_(R.live.is_(True), R.status == S.DRAFT), R.total),
        "payment_failures": (and_(R.live.is_(True), R.status == S.PAYMENT_FAILED), unpaid),
    } | {key: (and_(outstanding(), condition), unpaid) for key, condition in aging_conditions(today).items()}


def state_prefilter():
    """Rows any state figure may count: live records still open or awaiting approval (the status index)."""
    return and_(R.live.is_(True), R.status.in_((*OPEN_STATUSES, S.DRAFT)))


def record_figures(period, today):
    """Every figure counted on billing records: the flows in the period and the state now."""
    return flow_figures(period) | state_figures(today)


def payout_figures(period):
    """Figure → (condition on payouts, the amount it sums)."""
    return {
        "fees_owed": (Payout.status.in_(FEES_OWED_STATUSES), Payout.amount),
        "fees_paid": (and_(Payout.status.in_(FEES_PAID_STATUSES), in_period(Payout.transferred_at, period)),
                      Payout.amount - Payout.amount_reversed),
    }


def figure_jobs_condition(key, period, today):
    """The jobs behind a figure, as a condition on Job for the office job list; None for an unknown key."""
    if key == "billing_failures":
        return Job.billing_status == S.FAILED
    records = record_figures(period, today)
    if key in records:
        return Job.id.in_(select(R.job_id).where(records[key][0]))
    payouts = payout_figures(period)
    if key in payouts:
        return Job.id.in_(select(Payout.job_id).where(payouts[key][0]))
    return None


# --- The aggregates ------------------------------------------------------------------------------

@dataclass
class Figure:
    key: str
    label: str
    count: int = 0
    amounts: dict = field(default_factory=dict)  # currency → minor units
    in_period: bool = True

    def add(self, currency, count, amount):
        self.count += int(count or 0)
        if amount:
            self.amounts[currency] = self.amounts.get(currency, 0) + int(amount)


def summed_figures(model, specs, scope, prefilter):
    """One query: a count and a sum per figure and currency, with conditional aggregates.

    `prefilter` is a superset of every figure's rows that indexes can find, so the aggregate reads
    only those (the figures' own conditions, OR-ed, would be re-evaluated on every row instead).
    """
    columns = []
    for key, (condition, amount) in specs.items():
        columns.append(func.count(case((condition, 1))).label(f"{key}_count"))
        columns.append(func.coalesce(func.sum(case((condition, amount), else_=0)), 0).label(f"{key}_sum"))
    query = (select(model.currency, *columns).where(prefilter, *scope.conditions(model.job_id))
             .group_by(model.currency))
    figures = {key: Figure(key, FIGURE_LABELS.get(key, key)) for key in specs}
    for row in db.session.execute(query).mappings():
        for key, figure in figures.items():
            figure.add(row["currency"], row[f"{key}_count"], row[f"{key}_sum"])
    return figures


def state_now(today, scope):
    """The state figures and aging: one GROUP BY (currency, status, aging bucket) over live open or draft records.

    Grouping once is cheaper than a conditional aggregate per figure; the groups are combined here
    by the same rules state_figures() writes as conditions for the job list (the tests hold them equal).
    """
    bucket = case(*((condition, literal(key)) for key, condition in aging_conditions(today).items())).label("bucket")
    query = (select(R.currency, R.status, bucket, func.count(), func.sum(R.total - R.amount_paid), func.sum(R.total))
             .where(state_prefilter(), *scope.conditions(R.job_id)).group_by(R.currency, R.status, bucket))
    figures = {key: Figure(key, FIGURE_LABELS[key]) for key in state_figures(today)}
    for currency, status, aging, count, unpaid, total in db.session.execute(query):
        if status == S.DRAFT:
            figures["drafts"].add(currency, count, total)
            continue
        figures["outstanding"].add(currency, count, unpaid)
        figures[aging].add(currency, count, unpaid)
        if aging != "aging_current":
            figures["overdue"].add(currency, count, unpaid)
        if status == S.PAYMENT_FAILED:
            figures["payment_failures"].add(currency, count, unpaid)
    return figures


def billing_failures(scope):
    """Jobs whose billing failed and waits for a person (the job's status, as on the board)."""
    count = db.session.scalar(select(func.count()).select_from(Job).where(
        Job.billing_status == S.FAILED, *scope.conditions(Job.id)))
    return Figure("billing_failures", FIGURE_LABELS["billing_failures"], count=count, in_period=False)


@dataclass(frozen=True)
class Lag:
    count: int
    median: float | None  # seconds
    p90: float | None


def seconds_between(start, end):
    if db.engine.dialect.name == "postgresql":
        # date_part gives a float; EXTRACT gives a numeric, which sorts several times slower in percentile_cont.
        return func.date_part("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def lag(start, end, where):
    """Median and p90 of end − start over the matching rows: percentile_cont on PostgreSQL, ordered reads elsewhere."""
    seconds = seconds_between(start, end)
    base = select(R).where(start.is_not(None), end.is_not(None), *where)
    if db.engine.dialect.name == "postgresql":
        # One ordered-set aggregate with an array of fractions: one sort for both percentiles.
        count, values = db.session.execute(base.with_only_columns(
            func.count(), func.percentile_cont(postgresql.array([0.5, 0.9])).within_group(seconds))).one()
        median, p90 = (float(value) for value in values) if values else (None, None)
        return Lag(count, median, p90)
    count = db.session.scalar(base.with_only_columns(func.count()))
    return Lag(count, *(ordered_percentile(base, seconds, count, p) for p in (0.5, 0.9)))


def ordered_percentile(base, seconds, count, fraction):
    """percentile_cont by reading the two neighbouring values in order (SQLite has no percentile_cont)."""
    if not count:
        return None
    position = fraction * (count - 1)
    below = math.floor(position)
    values = [float(v) for v in db.session.scalars(
        base.with_only_columns(seconds).order_by(seconds).offset(below).limit(2))]
    if len(values) == 1:
        return values[0]
    return values[0] + (values[1] - values[0]) * (position - below)


def billing_lags(period, scope):
    """Completion → sent over records sent in the period; sent → paid over records paid in it."""
    scoped = scope.conditions(R.job_id)
    flows = flow_figures(period)  # the same records as the Invoiced and Paid figures, which the lags link to
    return {
        "completion_to_sent": lag(R.work_completed_at, R.sent_at, [flows["invoiced"][0], *scoped]),
        "sent_to_paid": lag(R.sent_at, R.paid_at, [flows["paid"][0], *scoped]),
    }


def trend_buckets(period):
    """Bucket start days for the trend: days up to a month, weeks (from Monday) up to half a year, else months."""
    if period.days <= DAILY_UP_TO_DAYS:
        return "day", [period.first_day + timedelta(days=n) for n in range(period.days)]
    if period.days <= WEEKLY_UP_TO_DAYS:
        first = period.first_day - timedelta(days=period.first_day.weekday())
        return "week", [first + timedelta(weeks=n) for n in range((period.last_day - first).days // 7 + 1)]
    starts, month = [], period.first_day.replace(day=1)
    while month <= period.last_day:
        starts.append(month)
        month = (month + timedelta(days=32)).replace(day=1)
    return "month", starts


def bucket_index(column, edges):
    """SQL: which bucket an instant falls in, given each later bucket's start (a CASE, portable)."""
    if not edges:  # one bucket: a CASE needs at least one WHEN
        return literal(0)
    return case(*((column < edge, index) for index, edge in enumerate(edges)), else_=len(edges))


@dataclass
class TrendPoint:
    day: date
    billed: dict = field(default_factory=dict)  # currency → minor units
    collected: dict = field(default_factory=dict)


def trend(period, scope):
    """Billed (sent) and collected (paid) per bucket and currency: one query, a UNION of two GROUP BYs."""
    unit, starts = trend_buckets(period)
    edges = [day_start_utc(day) for day in starts[1:]]
    billed_bucket = bucket_index(R.sent_at, edges).label("bucket")
    paid_bucket = bucket_index(R.paid_at, edges).label("bucket")
    scoped = scope.conditions(R.job_id)
    flows = flow_figures(period)  # the same records as the Invoiced and Paid figures: the bars add up to them
    query = union_all(
        select(literal("billed").label("series"), billed_bucket, R.currency, func.sum(R.total).label("amount"))
        .where(flows["invoiced"][0], *scoped).group_by(billed_bucket, R.currency),
        select(literal("collected").label("series"), paid_bucket, R.currency, func.sum(R.amount_paid).label("amount"))
        .where(flows["paid"][0], *scoped).group_by(paid_bucket, R.currency),
    )
    points = [TrendPoint(day) for day in starts]
    for series, bucket, currency, amount in db.session.execute(query):
        getattr(points[bucket], series)[currency] = int(amount or 0)
    return unit, points


@dataclass(frozen=True)
class WebhookHealth:
    received: int  # stored, waiting for the worker
    failed: int  # open issues on the Webhook issues page
    processed: int
    last_received_at: object


def webhook_health():
    """Counts of stored Stripe events by status, and the last one's arrival: one query over an indexed column."""
    rows = db.session.execute(select(WebhookEvent.status, func.count(), func.max(WebhookEvent.received_at))
                              .group_by(WebhookEvent.status)).all()
    counts = {status: count for status, count, _ in rows}
    latest = max((last for _, _, last in rows if last is not None), default=None)
    return WebhookHealth(counts.get(EventStatus.RECEIVED, 0), counts.get(EventStatus.FAILED, 0),
                         counts.get(EventStatus.PROCESSED, 0), latest)


@dataclass
class Dashboard:
    period: Period
    scope: Scope
    today: date
    for_owner: bool
    headlines: list
    aging: list  # Figures in AGING_BUCKETS order
    lags: dict
    webhooks: WebhookHealth
    trend_unit: str | None = None
    trend: list | None = None
    fees: list | None = None


def dashboard_for(user, period, scope, *, now=None):
    """Everything the dashboard shows this user: a fixed number of queries whatever the row count."""
    today = business_today(now)
    for_owner = user.role == Role.OWNER
    records = summed_figures(R, flow_figures(period), scope, flows_prefilter(period))
    records |= state_now(today, scope)
    records["billing_failures"] = billing_failures(scope)
    headlines = []
    for spec in HEADLINES:
        if spec.owner_only and not for_owner:
            continue
        figure = records[spec.key]
        figure.label, figure.in_period = spec.label, spec.in_period
        headlines.append(figure)
    aging = [records[bucket.key] for bucket in AGING_BUCKETS]
    for bucket, figure in zip(AGING_BUCKETS, aging):
        figure.label = bucket.label
    result = Dashboard(period, scope, today, for_owner, headlines, aging, billing_lags(period, scope), webhook_health())
    if for_owner:
        result.trend_unit, result.trend = trend(period, scope)
        specs = payout_figures(period)
        fees = summed_figures(Payout, specs, scope, or_(*(condition for condition, _ in specs.values())))
        result.fees = [fees["fees_owed"], fees["fees_paid"]]
        result.fees[1].in_period = True
        result.fees[0].in_period = False
    return result


def format_duration(seconds):
    """A lag as a person says it: '45 min', '5.5 h', '3.2 days'; an em dash when there is none."""
    if seconds is None:
        return "—"
    if seconds < 3600:
        return f"{max(seconds, 0) / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
