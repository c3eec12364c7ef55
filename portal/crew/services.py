"""What a crew member's phone shows: their day, split the way they work through it."""
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

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

