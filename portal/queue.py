"""RQ queues, enqueued by dotted name so the web process never imports worker-only code.

With no REDIS_URL (the embedded default for a newcomer) a task runs in a background
thread of the web process instead, with its own app context.
"""
import threading

from flask import current_app
from redis import Redis
from rq import Queue, get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.utils import import_attribute
from sqlalchemy import event
from sqlalchemy.orm import Session

QUEUE_NAMES = ("default",)
AFTER_COMMIT = "closeout_enqueue_after_commit"


def redis_connection():
    """The shared Redis connection, or None when running the embedded default."""
    url = current_app.config.get("REDIS_URL")
    if not url:
        return None
    connection = current_app.extensions.get("closeout_redis")
    if connection is None:
        connection = current_app.extensions["closeout_redis"] = Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=5
        )
    return connection


def get_queue(name="default", connection=None):
    """The named RQ queue on the app's Redis."""
    prefix = current_app.config.get("RQ_QUEUE_PREFIX", "closeout")
    return Queue(f"{prefix}:{name}", connection=connection or redis_connection())


def enqueue(dotted_name, *args, queue="default", **options):
    """Enqueue a task by dotted name with plain-id arguments (in a thread without Redis)."""
    if redis_connection() is None:
        app = current_app._get_current_object()
        thread = threading.Thread(target=_run_in_process, args=(app, dotted_name, args), daemon=True)
        thread.start()
        return thread
    return get_queue(queue).enqueue_call(dotted_name, args=args, **options)


ACTIVE_STATUSES = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


def job_status(job_id):
    """The RQ status of this job, or None once Redis no longer has it (or runs tasks in-process)."""
    connection = redis_connection()
    if connection is None:
        return None  # in-process tasks leave no trace; a pending row means the thread is gone
    try:
        return Job.fetch(job_id, connection=connection).get_status()
    except NoSuchJobError:
        return None


def is_queued(job_id):
    """Whether Redis still has this job waiting, scheduled for a retry, or running."""
    return job_status(job_id) in ACTIVE_STATUSES


def is_last_attempt():
    """True when RQ will not retry the running task again (or it runs outside RQ, in-process)."""
    job = get_current_job()
    return job is None or not job.retries_left


def _run_in_process(app, dotted_name, args):
    with app.app_context():
        from portal.extensions import db

        try:
            import_attribute(dotted_name)(*args)
        except Exception:  # the task already recorded the failure on its row; keep the thread's error visible
            app.logger.exception("in-process task %s%r failed", dotted_name, args)
        finally:
            db.session.remove()


def enqueue_after_commit(session, dotted_name, *args, **options):
    """Enqueue once the current transaction commits (the outbox row exists first), never on rollback."""
    session.info.setdefault(AFTER_COMMIT, []).append((dotted_name, args, options))


@event.listens_for(Session, "after_commit")
def _enqueue_committed(session):
    pending = session.info.pop(AFTER_COMMIT, [])
    for dotted_name, args, options in pending:
        try:
            enqueue(dotted_name, *args, **options)
        except Exception:  # Redis down: the row is committed and the sweeper will enqueue it
            current_app.logger.exception("could not enqueue %s%r; the sweeper will retry", dotted_name, args)


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session):
    session.info.pop(AFTER_COMMIT, None)
