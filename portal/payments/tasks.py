"""RQ tasks for payment sync: plain functions that take ids and reload rows."""
import traceback

from portal.payments import services
from portal.queue import is_last_attempt


def process_webhook_event(event_row_id):
    """Apply one stored Stripe event to the billing records it concerns."""
    try:
        status = services.process_event(event_row_id)
    except Exception as error:  # noted on the event for the Webhook issues page, then re-raised for RQ's retry
        services.note_failure(event_row_id, error, traceback.format_exc(), final=is_last_attempt())
        raise
    return status.value if status else "missing"


def process_received_events():
    """Apply every stored event waiting for its first attempt, each in its own transaction (one job for many)."""
    from portal.queue import redis_connection

    connection = redis_connection()
    if connection is not None:
        # Cleared first: an event stored from now on queues a new drain, so none is left behind by this one.
        connection.delete(services.drain_marker())
    claimed, more = services.drain_received_events()
    if more:
        services.request_drain()
    return claimed


def sweep_received_events():
    """Scheduled: stored events that no worker picked up (Redis lost the job) go back on the queue."""
    return services.sweep_received_events()


def sweep_overdue():
    """Scheduled: unpaid bills past their due date become overdue."""
    return [billing_record.id for billing_record in services.sweep_overdue()]


def reconcile_with_stripe():
    """Scheduled hourly: catch up on missed events and repair drift in open bills."""
    from portal.payments.reconcile import reconcile

    return reconcile().summary()
