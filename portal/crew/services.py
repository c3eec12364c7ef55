"""What a crew member's phone shows (their day, split the way they work through it) and how its offline changes land."""
import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from portal.audit.models import AuditEntry
from portal.crew.models import ChangeKind, CrewChange
from portal.errors import ServiceError, TransitionNotAllowed, Unprocessable
from portal.extensions import db
from portal.jobs.models import WorkStatus
from portal.jobs.services import crew_jobs
from portal.timeutil import business_zone, utcnow


@dataclass
class MyJobsBoard:
    """A crew member's jobs: open ones due today (or overdue), open ones later, and today's finished ones."""

    today: date
    due: list = field(default_factory=list)
    upcoming: list = field(default_factory=list)
    done: list = field(default_factory=list)


def my_jobs_board(user):
    """The crew member's jobs grouped Today / Upcoming / Done today, in the business's timezone."""
    zone = business_zone()
    today = utcnow().astimezone(zone).date()
    tomorrow = datetime.combine(today + timedelta(days=1), time.min, tzinfo=zone)
    board = MyJobsBoard(today=today)
    for job in crew_jobs(user, today):
        if job.work_status == WorkStatus.COMPLETED:
            board.done.append(job)
        elif job.scheduled_start is None or job.scheduled_start < tomorrow:
            # Unscheduled and overdue work belongs on today's list: it is waiting on this crew now.
            board.due.append(job)
        else:
            board.upcoming.append(job)
    return board



# --- The offline crew app (issue 9): change ids, replays and conflicts ------------------------------

CHANGE_ID_HEADER = "X-Client-Change-Id"  # or the form field client_change_id
SEEN_REOPENS_HEADER = "X-Job-Reopens"  # or the form field seen_reopens: how many reopens the phone had seen
CHANGE_STATUS_HEADER = "X-Client-Change"  # on the answer: "applied" or "replayed"


class ReopenedMeanwhile(TransitionNotAllowed):
    """The office reopened the job after the phone loaded it; its queued changes wait for the crew to look."""


def parse_change_id(raw):
    """A phone's change id as a canonical UUID string, None when there is none; 400 when it is not a UUID."""
    if raw is None or not raw.strip():
        return None
    try:
        return str(uuid.UUID(raw.strip()))
    except ValueError:
        raise ServiceError("This change's id is not a UUID.", {"client_change_id": "not a UUID"}) from None


def parse_seen_reopens(raw):
    """The reopen count a phone saw when it loaded the card, or None when it did not say."""
    try:
        return max(0, int(raw)) if raw not in (None, "") else None
    except ValueError:
        return None


def reopen_count(job):
    """How many times the office has reopened the job: the card carries it, queued changes send it back."""
    return db.session.scalar(
        select(func.count(AuditEntry.id)).where(AuditEntry.job_id == job.id, AuditEntry.action == "job.reopened"))


def require_not_reopened_since(job, seen):
    """Refuse a queued change made before the office's latest reopen, naming the office's reason."""
    if seen is None or reopen_count(job) <= seen:
        return
    reason = db.session.scalar(
        select(AuditEntry.detail).where(AuditEntry.job_id == job.id, AuditEntry.action == "job.reopened")
        .order_by(AuditEntry.id.desc()).limit(1)) or {}
    because = f" ({reason['reason']})" if reason.get("reason") else ""
    raise ReopenedMeanwhile(f"The office reopened this job{because} after this phone loaded it.",
                            {"job": "reopened"})


def find_change(user, job, kind, change_id):
    """The change already recorded under this id, or None; an id used for anything else is refused."""
    change = db.session.scalar(select(CrewChange).where(CrewChange.client_id == change_id))
    if change is not None and (change.user_id != user.id or change.job_id != job.id or change.kind != kind):
        raise Unprocessable("This change id was already used for another change.", {"client_change_id": "taken"})
    return change


def apply_change(user, job, kind, change_id, seen, apply):
    """Run apply() at most once per change id; returns (change, replayed), the original change on a replay.

    Without a change id (an ordinary form post) apply() simply runs and the change is None.
    """
    if change_id is None:
        apply()
        return None, False
    existing = find_change(user, job, kind, change_id)
    if existing is not None:
        return existing, True
    require_not_reopened_since(job, seen)
    change = CrewChange(client_id=change_id, user_id=user.id, job_id=job.id, kind=kind)
    db.session.add(change)
    try:
        # Claim the id before doing anything: a concurrent replay of the same change waits on the
        # unique index until this transaction ends, then finds the id taken and answers from it.
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        existing = find_change(user, job, kind, change_id)
        if existing is None:
            raise
        return existing, True
    result = apply()
    change.result_id = None if kind == ChangeKind.COMPLETE else result.id
    return change, False


def offline_version():
    """A version of the crew app's files: the service worker's caches are named after it, so a deploy renews them."""
    return _offline_version(current_app.static_folder, current_app.root_path)


@lru_cache(maxsize=4)
def _offline_version(static_folder, root_path):
    digest = hashlib.sha256()
    for folder in (Path(static_folder), Path(root_path) / "templates" / "crew"):
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                digest.update(str(path.relative_to(folder)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
