"""RQ queues, enqueued by dotted name so the web process never imports worker-only code.

With no REDIS_URL (the embedded default for a newcomer) a task runs in-process,
synchronously, right where it is enqueued.
"""
from flask import current_app
from redis import Redis
from rq import Queue
from rq.utils import import_attribute

QUEUE_NAMES = ("default",)


def redis_connection():
    """The shared Redis connection, or None when running the embedded default."""
    url = current_app.config.get("REDIS_URL")
    if not url:
        return None
    connection = current_app.extensions.get("closeout_redis")
    if connection is None:
        connection = current_app.extensions["closeout_redis"] = Redis.from_url(url)
    return connection


def get_queue(name="default", connection=None):
    """The named RQ queue on the app's Redis."""
    prefix = current_app.config.get("RQ_QUEUE_PREFIX", "closeout")
    return Queue(f"{prefix}:{name}", connection=connection or redis_connection())


def enqueue(dotted_name, *args, queue="default", **options):
    """Enqueue a task by dotted name with plain-id arguments; run it now without Redis."""
    if redis_connection() is None:
        import_attribute(dotted_name)(*args)
        return None
    return get_queue(queue).enqueue_call(dotted_name, args=args, **options)
