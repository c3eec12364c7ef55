"""The RQ worker: `python worker.py` (scale out by starting more of them).

It runs RQ's scheduler too, so that retries with backoff fire.
"""
from dotenv import load_dotenv

load_dotenv()

from rq import Worker  # noqa: E402

from portal import create_app  # noqa: E402
from portal.queue import QUEUE_NAMES, get_queue, redis_connection  # noqa: E402


def main():
    app = create_app()
    with app.app_context():
        connection = redis_connection()
        if connection is None:
            raise SystemExit("REDIS_URL is not set: without Redis, tasks run inside the web process.")
        queues = [get_queue(name) for name in QUEUE_NAMES]
        Worker(queues, connection=connection).work(with_scheduler=True)


if __name__ == "__main__":
    main()
