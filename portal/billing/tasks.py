"""RQ tasks for billing: plain functions that take ids and reload rows.

Enqueued by dotted name (portal.queue.enqueue), so only the worker imports this module's
PDF and image dependencies.
"""

from portal.billing import pipeline
from portal.billing.models import BillingBatch, BillingTrigger
from portal.billing.stripe_gateway import StripeRefused
from portal.errors import ServiceError
from portal.queue import is_last_attempt

# Failures no retry can fix (Stripe refused the request, a client with no billing email):
# the trigger is marked failed at once, for a person to look at.
PERMANENT_FAILURES = (StripeRefused, ServiceError)


def run_claimed(model, row_id, run, note_failure):
    """Claim the row, run its steps; failures are noted on the row, then re-raised for RQ."""
    row = pipeline.claim(model, row_id)
    if row is None:
        return "nothing to do"
    try:
        run(row)
    except PERMANENT_FAILURES as error:
        note_failure(row, error, final=True)
        raise
    except Exception as error:  # noted on the row for the office, then re-raised for RQ's retry
        note_failure(row, error, final=is_last_attempt())
        raise
    return "billed"


def process_billing_trigger(trigger_id):
    """Photos, proof PDF, Stripe invoice or payment link, and the customer's email, for one completion."""
    return run_claimed(BillingTrigger, trigger_id, pipeline.run, pipeline.note_failure)


def process_billing_batch(batch_id):
    """One invoice for a client's batched jobs (weekly, monthly or "Bill now")."""
    return run_claimed(BillingBatch, batch_id, pipeline.run_batch, pipeline.note_batch_failure)


def send_bill_email_task(record_id):
    """The customer's email for a record that became payable outside the pipeline (an approved draft)."""
    from portal.billing.emails import send_bill_email
    from portal.billing.models import BillingRecord
    from portal.extensions import db

    send_bill_email(db.session.get(BillingRecord, record_id), by=pipeline.WORKER)


def resend_bill_email_task(record_id, actor_label):
    """The office's "Resend the email"."""
    from portal.audit.services import Actor
    from portal.billing.emails import resend_bill_email
    from portal.billing.models import BillingRecord
    from portal.extensions import db

    resend_bill_email(db.session.get(BillingRecord, record_id), by=Actor.system(actor_label))


def sweep_triggers():
    """Scheduled: re-enqueue pending triggers that Redis lost or that got stuck."""
    from portal.billing.services import sweep

    return [trigger.id for trigger in sweep()]


def run_due_batches():
    """Scheduled: bill weekly and monthly clients' ready jobs from ended periods."""
    from portal.audit.services import Actor
    from portal.billing.services import run_batches

    return [batch.id for batch in run_batches(by=Actor.system("scheduled batch run"))]
