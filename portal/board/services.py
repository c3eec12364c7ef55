"""The board's queries: its version (for cheap polls), its groups with counts and amounts, its cards."""
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import and_, case, func, literal, not_, or_, select, union_all
from sqlalchemy.orm import load_only, selectinload

from portal.audit.models import Source
from portal.auth.models import User
from portal.billing.models import BillingRecord, BillingStatus as B
from portal.clients.models import Client, Site
from portal.extensions import db
from portal.jobs.models import Job, WorkStatus
from portal.timeutil import utcnow

PAID_SHOWN_FOR = timedelta(days=7)
CARDS_PER_GROUP = 50  # a column longer than this is a list for the Jobs screen, not a board


@dataclass(frozen=True)
class BoardGroup:
    key: str
    label: str
    shows_due_date: bool = False
    newest_first: bool = False  # by last change, latest on top; otherwise by scheduled start

    @property
    def order(self):
        if self.newest_first:
            return (Job.updated_at.desc(), Job.id.desc())
        return (Job.scheduled_start.nulls_last(), Job.id)


GROUPS = (
    BoardGroup("scheduled", "Scheduled"),
    BoardGroup("in_progress", "In progress"),
    BoardGroup("billing_pending", "Billing pending"),
    BoardGroup("draft", "Draft"),
    BoardGroup("sent", "Sent", shows_due_date=True),
    BoardGroup("processing", "Processing", shows_due_date=True),
    BoardGroup("paid", "Paid (last 7 days)", newest_first=True),  # the latest payment on top
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
    due_at: object  # the live bill's due date


def board_version():
    """A weak ETag that changes whenever any job does: two index lookups on `jobs`.

    Every change stamps updated_at and every new job takes a higher id; the app never deletes a job.
    """
    jobs = Job.__table__  # Core columns: the poll skips the ORM's statement handling, which costs more than the query
    latest, last_id = db.session.execute(select(func.max(jobs.c.updated_at), func.max(jobs.c.id))).one()
    stamp = int(latest.timestamp() * 1_000_000) if latest is not None else 0
    # The day is part of it because "paid in the last 7 days" changes with the date alone.
    return f'W/"{stamp}-{last_id or 0}-{utcnow():%Y%m%d}"'


def group_rules(work_status, billing_status, paid_recently):
    """(group, condition) in precedence order: a job is in the first group whose condition it meets."""
    return (
        ("scheduled", work_status == WorkStatus.SCHEDULED),
        ("in_progress", work_status == WorkStatus.IN_PROGRESS),
        ("billing_pending", billing_status.in_([B.PENDING, B.READY_TO_BILL])),
        ("draft", billing_status == B.DRAFT),
        ("sent", billing_status == B.SENT),
        ("processing", billing_status == B.PROCESSING),
        # A job's last change is when it was paid (or partly refunded): nothing else may change a billed job.
        ("paid", and_(billing_status.in_([B.PAID, B.PARTIALLY_REFUNDED]), paid_recently)),
        ("overdue", billing_status == B.OVERDUE),
        ("failed", billing_status.in_([B.FAILED, B.PAYMENT_FAILED])),
    )


def job_rules(now):
    return group_rules(Job.work_status, Job.billing_status, Job.updated_at >= now - PAID_SHOWN_FOR)


def group_key(rules):
    """SQL for the board group a row belongs to, or NULL when it is off the board."""
    return case(*((condition, literal(key)) for key, condition in rules), else_=None)


def in_group(key, now):
    """The jobs of one group, written out (its condition and no earlier one's), so the planner can walk an
    index in board order and stop at CARDS_PER_GROUP, which it cannot do through a CASE."""
    earlier = []
    for rule_key, condition in job_rules(now):
        if rule_key == key:
            return and_(condition, *(not_(previous) for previous in earlier))
        earlier.append(condition)
    raise KeyError(key)


def may_be_on_board(now):
    """Any group's condition: indexable, so a large book's paid and closed jobs are never scanned."""
    return or_(*(condition for _, condition in job_rules(now)))


def group_sums(now):
    """(group, currency, count, amount) rows for the board's jobs.

    The jobs are grouped on their plain columns first (a hash of a few values per row); the CASE that
    names the group then runs once per distinct combination, not once per job.
    """
    paid_recently = (Job.updated_at >= now - PAID_SHOWN_FOR).label("paid_recently")
    combos = (
        select(Job.work_status, Job.billing_status, paid_recently, Job.currency,
               func.count().label("jobs"), func.sum(Job.lines_total).label("amount"))
        .where(may_be_on_board(now))
        .group_by(Job.work_status, Job.billing_status, paid_recently, Job.currency)
        .subquery()
    )
    key = group_key(group_rules(combos.c.work_status, combos.c.billing_status, combos.c.paid_recently)).label(
        "group_key")
    return db.session.execute(
        select(key, combos.c.currency, func.sum(combos.c.jobs), func.sum(combos.c.amount))
        .where(key.is_not(None)).group_by(key, combos.c.currency))


def board(now=None):
    """The groups in board order, with counts, amounts per currency and up to CARDS_PER_GROUP cards each."""
    now = now or utcnow()
    views = {group.key: GroupView(group) for group in GROUPS}
    for group, currency, count, amount in group_sums(now):
        views[group].count += int(count)
        views[group].amounts[currency] = int(amount)
    # Cards: each group's first CARDS_PER_GROUP by place, each group read in board order from an index.
    firsts = union_all(*(
        select(Job.id.label("job_id"), literal(group.key).label("group_key"),
               func.row_number().over(order_by=group.order).label("place"))
        .where(in_group(group.key, now))
        .order_by(*group.order)
        .limit(CARDS_PER_GROUP)
        .subquery().select()  # SQLite takes a LIMIT inside UNION ALL only in a subquery
        for group in GROUPS
    )).subquery()
    live_due = (
        select(BillingRecord.job_id, BillingRecord.due_at).where(BillingRecord.live.is_(True)).subquery()
    )
    cards = (
        select(Job, firsts.c.group_key, live_due.c.due_at)
        .join(firsts, firsts.c.job_id == Job.id)
        .outerjoin(live_due, live_due.c.job_id == Job.id)
        .order_by(firsts.c.group_key, firsts.c.place)
        .options(
            # The columns a card shows (the constant-statement test catches one it reads and this misses).
            load_only(Job.id, Job.number, Job.currency, Job.work_status, Job.billing_status, Job.scheduled_start,
                      Job.lines_total, Job.client_id, Job.site_id),
            selectinload(Job.client).load_only(Client.name),
            selectinload(Job.site).load_only(Site.name),
            selectinload(Job.crew).load_only(User.name),
        )
    )
    for job, group, due_at in db.session.execute(cards):
        views[group].cards.append(Card(job, due_at))
    return [views[group.key] for group in GROUPS]


# --- The job page's payment timeline ---------------------------------------------------------------

SOURCE_LABELS = {
    Source.USER: "Office",
    Source.API_TOKEN: "API",
    Source.WEBHOOK: "Stripe webhook",
    Source.SYSTEM: "Billing worker",
    Source.RECONCILE: "Reconcile",
}


# What the timeline says for an entry that is not a status change; an action not listed shows as it is.
ACTION_LABELS = {
    "billing.triggered": "Billing started",
    "billing.record_opened": "Bill opened",
    "billing.proof_rendered": "Proof-of-work PDF made",
    "billing.stripe_invoice_created": "Stripe invoice created",
    "billing.stripe_payment_link_created": "Stripe payment link created",
    "billing.draft_approved": "Draft approved",
    "billing.failed": "Billing failed",
    "billing.retry_requested": "Billing retried",
    "billing.batch_opened": "Added to a batch invoice",
    "billing.batch_failed": "Batch invoice failed",
    "billing.record_closed": "Bill closed",
    "billing.rebill_requested": "Re-bill requested",
    "billing.trigger_cancelled": "Billing cancelled",
    "billing.no_charge": "No charge",
    "billing.paid_offline": "Marked paid offline",
    "billing.dispute_won": "Dispute won: the payment stands",
    "billing.dispute_lost": "Dispute lost: the money went back",
    "email.sent": "Bill emailed",
    "email.resent": "Bill emailed again",
    "email.resend_requested": "Resend requested",
    "email.failed": "Email failed",
    "email.skipped": "Email skipped",
    "payments.event_ignored": "Stripe event ignored",
    "payments.event_ignored_by_person": "Stripe event ignored by the office",
    "payments.event_retry": "Stripe event retried",
    "referrals.fee_accrued": "Referral fee earned",
    "referrals.fee_not_earned": "No referral fee",
    "referrals.dispute_noted": "Dispute noted on the referral fee",
    "referrals.payout_held": "Referral fee held",
    "referrals.payout_released": "Referral fee released",
    "referrals.payout_transferred": "Referral fee transferred",
    "referrals.payout_failed": "Referral fee transfer failed",
    "referrals.payout_reduced": "Referral fee reduced",
    "referrals.payout_cancelled": "Referral fee cancelled",
    "referrals.transfer_reversed": "Referral transfer reversed",
    "referrals.payout_reversed": "Referral fee reversed",
}


def action_label(entry):
    """What happened, as the office says it."""
    return ACTION_LABELS.get(entry.action, entry.action)


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
