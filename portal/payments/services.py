"""Payment sync rules: receiving Stripe's events, processing them once, and the people-facing failures."""
import functools
import json
import time
import traceback
from datetime import timedelta
from email.message import EmailMessage

import stripe
from flask import abort, current_app
from redis.exceptions import RedisError
from sqlalchemy import create_engine, event, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from portal.audit.models import Source
from portal.audit.services import Actor, record
from portal.errors import ServiceError, TransitionNotAllowed
from portal.extensions import db, is_row_id
from portal.payments.models import EventStatus, StripeSyncState, WebhookEvent
from portal.queue import enqueue, enqueue_after_commit, get_queue, redis_connection
from portal.timeutil import utcnow

PROCESS_EVENT = "portal.payments.tasks.process_webhook_event"
DRAIN_EVENTS = "portal.payments.tasks.process_received_events"
# One queued drain stands for every event stored after it was queued; the marker says one is waiting. It expires,
# so a drain Redis lost costs at most this long (the sweeper has the events anyway), and a second drain is harmless.
DRAIN_MARKER_SECONDS = 60
# A drain hands the queue back after this many events or seconds (queueing its successor), so invoices and other
# tasks on the same queue never wait behind a long backlog of events.
DRAIN_MAX_EVENTS = 1000
DRAIN_MAX_SECONDS = 30
DRAIN_JOB_TIMEOUT = 600
TOLERANCE_SECONDS = 300
SYNC_STATE_ID = 1


class SignatureRefused(ServiceError):
    """A delivery whose Stripe-Signature does not prove it came from Stripe, now."""


# --- The receiver -------------------------------------------------------------------------------

def webhook_secrets():
    """Every configured signing secret: several, comma-separated, while one is being rotated."""
    configured = current_app.config.get("STRIPE_WEBHOOK_SECRET") or ""
    return [secret.strip() for secret in configured.split(",") if secret.strip()]


def verify_signature(payload, header, *, now=None):
    """Raise SignatureRefused unless one secret signed this body within 300 s either side of now."""
    if not header:
        raise SignatureRefused("Missing Stripe-Signature header.")
    secrets = webhook_secrets()
    if not secrets:
        current_app.logger.error("STRIPE_WEBHOOK_SECRET is not set: every Stripe delivery is refused")
        raise SignatureRefused("Webhook signing secret is not configured.")
    text = payload.decode("utf-8", errors="replace")
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(text, header, secret, tolerance=TOLERANCE_SECONDS)
        except stripe.SignatureVerificationError:
            continue
        break
    else:
        raise SignatureRefused("No valid signature for this payload, or its timestamp is too old.")
    # The SDK only refuses old timestamps; one from the future is as suspect (issue 5, §1).
    timestamp = signed_timestamp(header)
    if timestamp - (now if now is not None else time.time()) > TOLERANCE_SECONDS:
        raise SignatureRefused("Signature timestamp is in the future.")


def signed_timestamp(header):
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.lstrip("-").isdigit():
            return int(value)
    raise SignatureRefused("Signature has no timestamp.")


def receive_stripe_event(payload, header):
    """Verify, store once, and hand a new event to the worker; returns True if it was new."""
    verify_signature(payload, header)
    try:
        event = json.loads(payload)
        event_id, event_type, created = event["id"], event["type"], int(event["created"])
    except (ValueError, KeyError, TypeError) as error:
        raise SignatureRefused(f"Not a Stripe event: {error}") from None
    values = event_row_values(event_id, event_type, created, event, "webhook")
    try:
        row_id = insert_received_event(values)
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
        # The pooled connection had died (a database restart): the pool has dropped it and its peers, and the
        # INSERT … ON CONFLICT DO NOTHING is safe to repeat on a fresh one.
        row_id = insert_received_event(values)
    if row_id is not None:
        enqueue_committed_event(row_id)
    return row_id is not None


def insert_received_event(values):
    """Store the event in one autocommitted statement; the new row's id, or None for a repeat."""
    # One statement is the whole transaction, so the row is durable before we enqueue or answer; it saves the
    # BEGIN and COMMIT round trips and the ORM's bookkeeping (bench/webhook_ingest.py).
    engine = receiver_engine()
    with engine.connect() as connection:
        return connection.execute(insert_event_statement(engine.dialect.name), values).scalar()


def receiver_engine():
    """The app's database in autocommit, for the receiver: on PostgreSQL, a pool that skips the pre-ping.

    The pre-ping is a round trip before every checkout; for a one-statement request it is a third of the
    receiver's database time. Without it a dead connection fails its statement instead, and the receiver
    retries once (SQLAlchemy's "optimistic" disconnect handling).
    """
    extensions = current_app.extensions
    engine = extensions.get("closeout_receiver_engine")
    if engine is not None:
        return engine
    if db.engine.dialect.name != "postgresql":  # SQLite (the demo): one file, one engine, nothing to go stale
        engine = db.engine.execution_options(isolation_level="AUTOCOMMIT")
        return extensions.setdefault("closeout_receiver_engine", engine)
    options = {**current_app.config.get("SQLALCHEMY_ENGINE_OPTIONS", {}), "pool_pre_ping": False}
    engine = create_engine(db.engine.url, isolation_level="AUTOCOMMIT", **options)
    if extensions.setdefault("closeout_receiver_engine", engine) is not engine:  # another thread was first
        engine.dispose()
        return extensions["closeout_receiver_engine"]

    @event.listens_for(db.engine, "engine_disposed", once=True)
    def dispose_with_the_app_engine(app_engine):
        # Whoever disposes the app's engine (a test session, a benchmark, a forked worker) means this pool too.
        extensions.pop("closeout_receiver_engine", None)
        engine.dispose()

    return engine


@functools.cache
def insert_event_statement(dialect_name):
    """INSERT … ON CONFLICT (stripe_event_id) DO NOTHING RETURNING id, for rows of event_row_values."""
    # Built once: constructing it per request cost about a third of the receiver's INSERT (cProfile).
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    table = WebhookEvent.__table__
    return dialect.insert(table).on_conflict_do_nothing(index_elements=["stripe_event_id"]).returning(table.c.id)


def event_row_values(event_id, event_type, created, event, received_via):
    return {"stripe_event_id": event_id, "type": event_type, "payload": event, "stripe_created": created,
            "received_via": received_via, "status": EventStatus.RECEIVED, "attempts": 0, "received_at": utcnow()}


def store_event(event_id, event_type, created, event, *, received_via):
    """INSERT … ON CONFLICT DO NOTHING in the session: the row's id if this event is new, None for a repeat."""
    return db.session.execute(insert_event_statement(db.engine.dialect.name),
                              event_row_values(event_id, event_type, created, event, received_via)).scalar()


def enqueue_processing(row_id):
    from portal.billing.services import retry_policy

    enqueue_after_commit(db.session, PROCESS_EVENT, row_id, retry=retry_policy())


def enqueue_committed_event(row_id):
    """Have an already-committed event processed: usually one Redis command, as a drain is already waiting."""
    connection = redis_connection()
    if connection is None:
        enqueue_event_job(row_id)  # in-process: a thread per event
        return
    try:
        request_drain(connection)
    except RedisError:
        # Acknowledged anyway, as portal.queue does after a commit: the row is stored and says "received".
        current_app.logger.exception("could not enqueue a drain for event %r; the row is stored", row_id)


def enqueue_event_job(row_id):
    """Give one stored event a job of its own, with RQ's retries (the sweeper's way: it may have been tried)."""
    from portal.billing.services import retry_policy

    connection = redis_connection()
    if connection is None:
        enqueue(PROCESS_EVENT, row_id, retry=retry_policy())
        return
    try:
        with connection.pipeline() as pipe:
            get_queue(connection=connection).enqueue_call(PROCESS_EVENT, args=(row_id,), retry=retry_policy(),
                                                          pipeline=pipe)
            pipe.execute()
    except RedisError:
        current_app.logger.exception("could not enqueue %s(%r); the row is stored", PROCESS_EVENT, row_id)


def drain_marker():
    return f"{current_app.config.get('RQ_QUEUE_PREFIX', 'closeout')}:payments:drain-queued"


def request_drain(connection=None):
    """Queue a drain of received events unless one is already waiting; True when this call queued it."""
    connection = connection or redis_connection()
    # Per event, one job each cost RQ about fourteen Redis commands in the worker (bench/event_processing.py).
    if not connection.set(drain_marker(), "1", nx=True, ex=DRAIN_MARKER_SECONDS):
        return False
    with connection.pipeline() as pipe:
        get_queue(connection=connection).enqueue_call(DRAIN_EVENTS, timeout=DRAIN_JOB_TIMEOUT, pipeline=pipe)
        pipe.execute()
    return True


# --- Processing (in the worker) ---------------------------------------------------------------

def process_event(row_id, *, source=Source.WEBHOOK):
    """Apply one stored event under its row lock; returns its status. Commits."""
    event_row = db.session.scalars(select(WebhookEvent).where(WebhookEvent.id == row_id).with_for_update()
                                   .execution_options(populate_existing=True)).one_or_none()
    if event_row is None or event_row.status in (EventStatus.PROCESSED, EventStatus.IGNORED):
        status = event_row.status if event_row else None
        db.session.commit()
        return status
    return apply_locked_event(event_row, source=source)


def apply_locked_event(event_row, *, source=Source.WEBHOOK):
    """Run the handler of an event whose row this transaction holds locked; returns its status. Commits."""
    from portal.payments.handlers import HANDLERS

    was_failed = event_row.status == EventStatus.FAILED
    handler = HANDLERS.get(event_row.type)
    if handler is None:
        status = EventStatus.IGNORED  # stored and acknowledged; Closeout has nothing to do with it
    else:
        label = "reconcile: Stripe event" if source == Source.RECONCILE else "Stripe event"
        results = handler(event_row.payload, by=Actor(source, event_row.stripe_event_id,
                                                      f"{label} {event_row.type}"))
        status = EventStatus.PROCESSED if results else EventStatus.IGNORED
        event_row.error = None if results else "No billing record matches this event."
    # Counted here rather than before the handler: one UPDATE of the row, not two. A failing handler rolls back
    # anyway, and note_failure counts that attempt.
    event_row.attempts += 1
    event_row.status = status
    event_row.processed_at = utcnow()
    if was_failed:
        # Only an event that was failed can leave the failed list by being processed (a Retry already moved it
        # back to received, and cleared the alert then): so only then can the alert need clearing.
        db.session.flush()
        clear_alert_if_healthy()
    db.session.commit()
    return status


def claim_received_event():
    """The oldest event still waiting for its first attempt, locked (others' locked rows skipped); or None."""
    return db.session.scalars(
        select(WebhookEvent).where(WebhookEvent.status == EventStatus.RECEIVED, WebhookEvent.attempts == 0)
        .order_by(WebhookEvent.id).limit(1).with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)).one_or_none()


def drain_received_events(*, max_events=DRAIN_MAX_EVENTS, max_seconds=DRAIN_MAX_SECONDS):
    """Apply waiting events oldest first, each in its own transaction; returns (events claimed, more may wait)."""
    deadline = time.monotonic() + max_seconds
    claimed = 0
    while claimed < max_events and time.monotonic() < deadline:
        event_row = claim_received_event()
        if event_row is None:
            db.session.commit()
            return claimed, False
        claimed += 1
        row_id = event_row.id
        try:
            apply_locked_event(event_row)
        except Exception as error:  # not swallowed: kept on the row, then retried by the event's own RQ job
            retry_after_failure(row_id, error, traceback.format_exc())
    return claimed, True


def retry_after_failure(row_id, error, traceback_text):
    """A drained event's first attempt failed: note it, and hand the event to its own job with RQ's backoff.

    The attempts count and the retry schedule are the same as when every event had its own job; a last failure
    lands in RQ's failed registry and on the Webhook issues page.
    """
    from rq import Retry

    from portal.billing.services import retry_policy

    policy = retry_policy()  # at least one retry: this attempt is never the last
    note_failure(row_id, error, traceback_text, final=False)
    retries_left = policy.max - 1
    try:
        get_queue().enqueue_in(timedelta(seconds=policy.intervals[0]), PROCESS_EVENT, row_id,
                               retry=Retry(max=retries_left, interval=policy.intervals[1:] or policy.intervals)
                               if retries_left else None)
    except RedisError:
        # Noted on the row, which stays "received": the sweeper enqueues it again.
        current_app.logger.exception("could not schedule the retry of event %r", row_id)


def note_failure(row_id, error, traceback_text, *, final):
    """Record a failed attempt on the event; the last one marks it failed and may alert the owner."""
    db.session.rollback()
    values = {"error": f"{type(error).__name__}: {error}"[:4000], "traceback": traceback_text[-20000:],
              "attempts": WebhookEvent.attempts + 1}
    if final:
        values["status"] = EventStatus.FAILED
    db.session.execute(update(WebhookEvent).where(WebhookEvent.id == row_id,
                                                  WebhookEvent.status == EventStatus.RECEIVED).values(**values))
    db.session.commit()
    if final:
        alert_owner_once()


def on_payment_confirmed(billing_record, *, event_id):
    """Money for this record is confirmed (bank debits once succeeded): audited, and the referral fee settled."""
    from portal.referrals.settlement import settle_referral_fee

    record(Actor(Source.WEBHOOK, event_id, "payment confirmed"), "payments.payment_confirmed", billing_record,
           job=billing_record.job, detail={"record_id": billing_record.id, "amount_paid": billing_record.amount_paid,
                                           "event_id": event_id})
    settle_referral_fee(billing_record, event_id=event_id)


# --- Failures people can see ------------------------------------------------------------------------

def sync_state():
    """The single sync-state row, created on first use (safely under concurrency)."""
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    db.session.execute(dialect.insert(StripeSyncState).values(id=SYNC_STATE_ID)
                       .on_conflict_do_nothing(index_elements=["id"]))
    return db.session.scalars(select(StripeSyncState).where(StripeSyncState.id == SYNC_STATE_ID)
                              .with_for_update().execution_options(populate_existing=True)).one()


def failed_events():
    return db.session.scalars(select(WebhookEvent).where(WebhookEvent.status == EventStatus.FAILED)
                              .order_by(WebhookEvent.id)).all()


def alert_owner_once():
    """Email ALERT_EMAIL when failures start; not again until they have all been dealt with."""
    from portal.billing.emails import MailRefused, MailUnavailable, deliver

    state = sync_state()
    failed = failed_events()
    if state.failure_alert_sent_at is not None or not failed:
        db.session.commit()
        return False
    try:
        deliver(failure_alert(failed), [current_app.config.get("ALERT_EMAIL") or current_app.config["OFFICE_EMAIL"]])
    except (MailUnavailable, MailRefused):
        # Unsent, so not marked: the next failure tries again; the page shows the failures meanwhile.
        current_app.logger.exception("could not email the webhook failure alert")
        db.session.rollback()
        return False
    state.failure_alert_sent_at = utcnow()
    db.session.commit()
    return True


def failure_alert(failed):
    config = current_app.config
    message = EmailMessage()
    message["Subject"] = f"Closeout: Stripe events are failing ({len(failed)})"
    message["From"] = config.get("MAIL_FROM", "billing@closeout.invalid")
    message["To"] = config.get("ALERT_EMAIL") or config["OFFICE_EMAIL"]
    first = failed[0]
    message.set_content(
        f"Closeout could not process {len(failed)} Stripe event(s), so some payment statuses may be out of date.\n\n"
        f"First: {first.type} ({first.stripe_event_id})\n{first.error}\n\n"
        f"Retry or ignore them on the Webhook issues page: {config['PUBLIC_URL']}/webhooks/issues\n"
        "You will not get another email until these are dealt with.\n")
    return message


def clear_alert_if_healthy():
    """Once no event is failed, the next failure is news again (one statement: it runs per event)."""
    no_failures = ~exists().where(WebhookEvent.status == EventStatus.FAILED)
    db.session.execute(update(StripeSyncState).where(StripeSyncState.failure_alert_sent_at.is_not(None), no_failures)
                       .values(failure_alert_sent_at=None))


def sweep_received_events(now=None, older_than=timedelta(minutes=10)):
    """Re-enqueue stored events still waiting long after they arrived: Redis lost their job, or never had it."""
    now = now or utcnow()
    stuck = db.session.scalars(
        select(WebhookEvent.id).where(WebhookEvent.status == EventStatus.RECEIVED,
                                      WebhookEvent.received_at < now - older_than).order_by(WebhookEvent.id)
    ).all()
    for row_id in stuck:
        enqueue_event_job(row_id)  # a drain would pass over one already tried once (its retry job is lost too)
    return stuck


def get_event_for(user, event_id):
    """A stored event, for staff only (404 otherwise, as for jobs)."""
    from portal.auth.models import STAFF_ROLES

    if user.role not in STAFF_ROLES or not is_row_id(event_id):
        abort(404)
    event_row = db.session.get(WebhookEvent, event_id)
    if event_row is None:
        abort(404)
    return event_row


def retry_event(event_row, *, by):
    """A person's Retry: the failed event goes back to the worker for a fresh round of attempts."""
    if event_row.status != EventStatus.FAILED:
        raise TransitionNotAllowed("Only a failed event can be retried.")
    event_row.status = EventStatus.RECEIVED
    record(by, "payments.event_retry", event_row, detail={"stripe_event_id": event_row.stripe_event_id})
    enqueue_processing(event_row.id)
    db.session.flush()
    clear_alert_if_healthy()


def ignore_event(event_row, *, by):
    """A person's Ignore: the event is dismissed and leaves the issues list."""
    if event_row.status != EventStatus.FAILED:
        raise TransitionNotAllowed("Only a failed event can be ignored.")
    event_row.status = EventStatus.IGNORED
    event_row.processed_at = utcnow()
    record(by, "payments.event_ignored_by_person", event_row, detail={"stripe_event_id": event_row.stripe_event_id})
    db.session.flush()
    clear_alert_if_healthy()


def replay_failed(*, by):
    """`stripe replay --failed`: retry every failed event; returns them."""
    events = failed_events()
    for event_row in events:
        retry_event(event_row, by=by)
    return events


class EndpointHealth:
    """What the Webhook issues page says about the endpoint: last received, last processed, silence."""

    def __init__(self, now=None):
        from portal.billing.models import BillingRecord
        from portal.billing.services import OPEN_STATUSES

        now = now or utcnow()
        self.last_received = db.session.scalar(select(func.max(WebhookEvent.received_at)))
        self.last_processed = db.session.scalar(select(func.max(WebhookEvent.processed_at)))
        self.silence_hours = current_app.config.get("WEBHOOK_SILENCE_WARNING_HOURS", 24)
        self.open_bills = db.session.scalar(select(func.count()).select_from(BillingRecord)
                                            .where(BillingRecord.live, BillingRecord.status.in_(OPEN_STATUSES)))
        quiet_since = now - timedelta(hours=self.silence_hours)
        # Stripe disables an endpoint after days of failed deliveries; silence with bills out is the symptom.
        self.silent = bool(self.open_bills) and (self.last_received is None or self.last_received < quiet_since)


# --- Overdue: computed by Closeout (Stripe emits invoice.overdue only with Billing automations) ----

def sweep_overdue(now=None):
    """Mark live, unpaid records past their due date overdue; returns the records changed. Commits."""
    from portal.billing.models import BillingRecord, BillingStatus
    from portal.payments.sync import Change, Verdict, apply_change

    now = now or utcnow()
    by = Actor.system("overdue sweep")
    due = db.session.scalars(
        select(BillingRecord).where(BillingRecord.live, BillingRecord.due_at < now,
                                    BillingRecord.status.in_((BillingStatus.SENT, BillingStatus.PAYMENT_FAILED)))
        .order_by(BillingRecord.id).with_for_update(skip_locked=True)).all()
    changed = [r for r in due if apply_change(r, Change(BillingStatus.OVERDUE, at=now), by=by,
                                              note_ignored=False) == Verdict.APPLY]
    db.session.commit()
    return changed
