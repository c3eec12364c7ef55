"""The RQ worker: `python worker.py` (scale out by starting more of them).

It runs RQ's scheduler too, so that retries with backoff fire. `python worker.py --cron`
(exactly one of them) enqueues the periodic runs listed in portal/schedule.py.
"""
import sys

from dotenv import load_dotenv

load_dotenv()

from rq import SimpleWorker  # noqa: E402

from portal import create_app  # noqa: E402
from portal.extensions import db  # noqa: E402
from portal.queue import QUEUE_NAMES, get_queue, redis_connection  # noqa: E402


class CloseoutWorker(SimpleWorker):
    """Runs each task in its own app context and database session, in this process.

    Not forking keeps SQLAlchemy's connection pool valid and a task cheap; a fresh
    session per task means no task sees another's stale rows.
    """

    flask_app = None

    def execute_job(self, job, queue):
        with self.flask_app.app_context():
            try:
                return super().execute_job(job, queue)
            finally:
                db.session.remove()


def build_worker(app, **options):
    """A worker listening on every Closeout queue."""
    with app.app_context():
        connection = redis_connection()
        if connection is None:
            raise SystemExit("REDIS_URL is not set: without Redis, tasks run inside the web process.")
        queues = [get_queue(name) for name in QUEUE_NAMES]
    worker = CloseoutWorker(queues, connection=connection, **options)
    worker.flask_app = app
    return worker


def main():
    app = create_app()
    if "--cron" in sys.argv[1:]:
        from portal.schedule import build_cron

        with app.app_context():
            build_cron(redis_connection(), get_queue().name).start()
        return
    build_worker(app).work(with_scheduler=True)


if __name__ == "__main__":
    main()
