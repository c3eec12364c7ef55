"""The board's queries: its version (for cheap polls), its groups with counts and amounts, its cards."""
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import and_, case, func, literal, or_, select, union_all
from sqlalchemy.orm import selectinload

from portal.audit.models import Source
from portal.billing.models import BillingRecord, BillingStatus as B
from portal.extensions import db
from portal.jobs.models import Job, JobLineItem, WorkStatus
from portal.timeutil import utcnow

PAID_SHOWN_FOR = timedelta(days=7)
CARDS_PER_GROUP = 50  # a column longer than this is a list for the Jobs screen, not a board


@dataclass(frozen=True)
class BoardGroup:
    key: str
    label: str
    shows_due_date: bool = False


GROUPS = (
    BoardGroup("scheduled", "Scheduled"),
    BoardGroup("in_progress", "In progress"),
    BoardGroup("billing_pending", "Billing pending"),
    BoardGroup("draft", "Draft"),
    BoardGroup("sent", "Sent", shows_due_date=True),
    BoardGroup("processing", "Processing", shows_due_date=True),
    BoardGroup("paid", "Paid (last 7 days)"),
    BoardGroup("overdue", "Overdue", shows_due_date=True),
    BoardGroup("failed", "Failed", shows_due_date=True),
)


@dataclass
class GroupView:
    group: BoardGroup
    count: int = 0
    amounts: dict = field(default_factory=dict)  # currency → minor units
    cards: list = field(default_factory=list)

    @property
    def hidden(self):
        return self.count - len(self.cards)


@dataclass(frozen=True)
class Card:
    job: Job
    total: int
    due_at: object


def board_version():
    """A weak ETag that changes whenever any job does: one indexed aggregate over `jobs`."""
    jobs = Job.__table__  # Core columns: the poll skips the ORM's statement handling, which costs more than the query
    latest, count = db.session.execute(select(func.max(jobs.c.updated_at), func.count()).select_from(jobs)).one()
    stamp = int(latest.timestamp() * 1_000_000) if latest is not None else 0
    # The day is part of it because "paid in the last 7 days" changes with the date alone.
    return f'W/"{stamp}-{count}-{utcnow():%Y%m%d}"'


def group_key(now):
    """SQL for the board group a job belongs to, or NULL when it is off the board."""
    status = Job.billing_status
    return case(
        (Job.work_status == WorkStatus.SCHEDULED, literal("scheduled")),
        (Job.work_status == WorkStatus.IN_PROGRESS, literal("in_progress")),
        (status.in_([B.PENDING, B.READY_TO_BILL]), literal("billing_pending")),
        (status == B.DRAFT, literal("draft")),
        (status == B.SENT, literal("sent")),
        (status == B.PROCESSING, literal("processing")),
        # A job's last change is when it was paid (or partly refunded): nothing else may change a billed job.
        (and_(status.in_([B.PAID, B.PARTIALLY_REFUNDED]), Job.updated_at >= now - PAID_SHOWN_FOR), literal("paid")),
        (status == B.OVERDUE, literal("overdue")),
        (status.in_([B.FAILED, B.PAYMENT_FAILED]), literal("failed")),
        else_=None,
    )


def may_be_on_board(now):
    """An indexable superset of group_key's jobs, so a large book's paid and closed jobs are never scanned."""
    return or_(
        Job.work_status.in_([WorkStatus.SCHEDULED, WorkStatus.IN_PROGRESS]),
        Job.billing_status.in_([B.PENDING, B.READY_TO_BILL, B.DRAFT, B.SENT, B.PROCESSING, B.OVERDUE, B.FAILED,
                                B.PAYMENT_FAILED]),
        and_(Job.billing_status.in_([B.PAID, B.PARTIALLY_REFUNDED]), Job.updated_at >= now - PAID_SHOWN_FOR),
    )


# The indexed column that narrows each group down before group_key decides (it ranks work before billing).
GROUP_FILTERS = {
    "scheduled": lambda now: Job.work_status == WorkStatus.SCHEDULED,
    "in_progress": lambda now: Job.work_status == WorkStatus.IN_PROGRESS,
    "billing_pending": lambda now: Job.billing_status.in_([B.PENDING, B.READY_TO_BILL]),
    "draft": lambda now: Job.billing_status == B.DRAFT,
    "sent": lambda now: Job.billing_status == B.SENT,
    "processing": lambda now: Job.billing_status == B.PROCESSING,
    "paid": lambda now: Job.updated_at >= now - PAID_SHOWN_FOR,
    "overdue": lambda now: Job.billing_status == B.OVERDUE,
    "failed": lambda now: Job.billing_status.in_([B.FAILED, B.PAYMENT_FAILED]),
}


def job_total():
    """A job's total (amount + tax of its lines), summed by the database for that job alone."""
    return (
        select(func.coalesce(func.sum(JobLineItem.amount + JobLineItem.tax_amount), 0))
        .where(JobLineItem.job_id == Job.id)
        .scalar_subquery()
    )


def board(now=None):
    """The groups in board order, with counts, amounts per currency and up to CARDS_PER_GROUP cards each."""
    now = now or utcnow()
    key = group_key(now).label("group_key")
    views = {group.key: GroupView(group) for group in GROUPS}
    # Counts and amounts: one pass over the board's jobs, each total summed from that job's lines only.
    on_board = select(Job.currency, key, job_total().label("total")).where(may_be_on_board(now), key.is_not(None)).subquery()
    sums = select(on_board.c.group_key, on_board.c.currency, func.count(), func.sum(on_board.c.total)).group_by(
        on_board.c.group_key, on_board.c.currency)
    for group, currency, count, amount in db.session.execute(sums):
        views[group].count += count
        views[group].amounts[currency] = int(amount)
    # Cards: each group's first CARDS_PER_GROUP by place, found through that group's own indexed column, so
    # only a top-N sort per group runs, never a sort of the whole board.
    firsts = union_all(*(
        select(Job.id.label("job_id"), literal(group.key).label("group_key"),
               func.row_number().over(order_by=(Job.scheduled_start.nulls_last(), Job.id)).label("place"))
        .where(GROUP_FILTERS[group.key](now), key == group.key)
        .order_by(Job.scheduled_start.nulls_last(), Job.id)
        .limit(CARDS_PER_GROUP)
        .subquery().select()  # SQLite takes a LIMIT inside UNION ALL only in a subquery
        for group in GROUPS
    )).subquery()
    live_due = (
        select(BillingRecord.job_id, BillingRecord.due_at).where(BillingRecord.live.is_(True)).subquery()
    )
    cards = (
        select(Job, firsts.c.group_key, job_total(), live_due.c.due_at)
        .join(firsts, firsts.c.job_id == Job.id)
        .outerjoin(live_due, live_due.c.job_id == Job.id)
        .order_by(firsts.c.group_key, firsts.c.place)
        .options(selectinload(Job.client), selectinload(Job.site), selectinload(Job.crew))
    )
    for job, group, total, due_at in db.session.execute(cards):
        views[group].cards.append(Card(job, int(total), due_at))
    return [views[group.key] for group in GROUPS]


# --- The job page's payment timeline ---------------------------------------------------------------

SOURCE_LABELS = {
    Source.USER: "Office",
    Source.API_TOKEN: "API",
    Source.WEBHOOK: "Stripe webhook",
    Source.SYSTEM: "Billing worker",
    Source.RECONCILE: "Reconcile",
}


def payment_timeline(trail):
    """The billing and payment entries of a job's audit trail (oldest first), for its payment timeline."""
    return [
        entry for entry in sorted(trail, key=lambda entry: (entry.created_at, entry.id))
        if entry.action.startswith(("billing.", "email.")) or entry.source in (Source.WEBHOOK, Source.RECONCILE)
    ]


def source_label(entry):
    """Where an audit entry came from, as the office says it."""
    if entry.source == Source.USER and entry.actor_label and "(crew)" in entry.actor_label:
        return "Crew"
    return SOURCE_LABELS[entry.source]
