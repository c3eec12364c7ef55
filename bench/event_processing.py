"""Event processing: stored Stripe invoice events applied per second by one worker (target ≥ 100/s).

The invoices are fake but consistent: each job has a live, sent BillingRecord whose Stripe ids the
events name, and every event's object agrees with the precedence rules, so no event is a same-second
tie and the handler never re-reads Stripe. The events are stored with the receiver's own
`store_event` and enqueued as the receiver enqueues them; then one worker drains them in burst mode.
"""
import json
import subprocess
import sys
import time
from pathlib import Path

from bench._payments_setup import scratch_environment
from bench.report import Result

TITLE = "Event processing: stored Stripe invoice events applied per second by one worker"
JOBS = 800
# Per job: the payment, and for a quarter of them a late `invoice.finalized` or `invoice.sent` that
# precedence refuses (logged as ignored), as Stripe's out-of-order deliveries do.
LATE_EVERY = 4
TARGET_PER_SECOND = 100
TIMEOUT_SECONDS = 300
REPO = Path(__file__).resolve().parent.parent

# One `python worker.py`, timed from its first job to an empty queue (not its imports or create_app). It also
# counts what it sends: SQL statements, and Redis round trips (a pipeline is one), the deterministic figures.
DRAIN = """
import json, sys, time
from redis.connection import Connection
from sqlalchemy import event
from portal import create_app
from portal.extensions import db
from worker import build_worker
app = create_app()
counts = {"statements": 0, "redis": 0}
def count_statement(*args):
    counts["statements"] += 1
with app.app_context():
    event.listen(db.engine, "before_cursor_execute", count_statement)
send = Connection.send_packed_command
def count_round_trip(self, *args, **kwargs):
    counts["redis"] += 1
    return send(self, *args, **kwargs)
Connection.send_packed_command = count_round_trip
worker = build_worker(app)
started = time.perf_counter()
worker.work(burst=True, with_scheduler=False)
print(json.dumps({"seconds": time.perf_counter() - started, **counts}))
"""


def invoice_event(n, event_type, created, record_id, job_id, total, status):
    """An event shaped like Stripe's (stripe_sandbox fixtures: resources.event / resources.invoice)."""
    paid = status == "paid"
    invoice = {"id": f"in_bench_{n:06d}", "object": "invoice", "status": status, "currency": "usd",
               "customer": f"cus_bench_{n:06d}", "amount_due": total, "amount_remaining": 0 if paid else total,
               "amount_paid": total if paid else 0, "attempted": paid, "paid": paid,
               "number": f"BENCH-{n:06d}", "hosted_invoice_url": f"https://invoice.stripe.com/i/bench_{n:06d}",
               "due_date": created + 30 * 86400, "created": created - 3600, "livemode": False,
               "metadata": {"closeout_record_id": str(record_id), "job_id": str(job_id)}}
    return {"id": f"evt_bench_{event_type.split('.')[1]}_{n:06d}", "object": "event", "api_version": "2024-06-20",
            "created": created, "livemode": False, "pending_webhooks": 1, "type": event_type,
            "request": {"id": None, "idempotency_key": None}, "data": {"object": invoice}}


def seed(jobs):
    """Jobs with sent invoices, and their events stored and enqueued; returns the number of events."""
    from portal.billing.models import BillingRecord, BillingStatus, RecordKind
    from portal.clients.models import Client
    from portal.extensions import db
    from portal.jobs.models import Job, WorkStatus
    from portal.payments.services import enqueue_committed_event, store_event
    from portal.timeutil import utcnow

    customer = Client(name="Bench client", billing_emails=["ap@example.com"], phone="555-0100", address="1 Main St")
    db.session.add(customer)
    now = utcnow()
    records = []
    for n in range(jobs):
        job = Job(client=customer, scope=f"Bench job {n}", work_status=WorkStatus.COMPLETED, completed_at=now,
                  billing_status=BillingStatus.SENT)
        records.append(BillingRecord(job=job, kind=RecordKind.INVOICE, status=BillingStatus.SENT, live=True,
                                     currency="usd", subtotal=8500, total=8500, stripe_invoice_id=f"in_bench_{n:06d}"))
    db.session.add_all(records)
    db.session.commit()
    paid_at = int(time.time()) - 60
    events = []
    for n, billing_record in enumerate(records):
        args = (billing_record.id, billing_record.job_id, billing_record.total)
        events.append(invoice_event(n, "invoice.paid", paid_at, *args, status="paid"))
        if n % LATE_EVERY == 0:
            late_type = "invoice.finalized" if n % (2 * LATE_EVERY) == 0 else "invoice.sent"
            events.append(invoice_event(n, late_type, paid_at - 120, *args, status="open"))
    row_ids = [store_event(e["id"], e["type"], e["created"], e, received_via="webhook") for e in events]
    db.session.commit()
    for row_id in row_ids:
        enqueue_committed_event(row_id)
    return len(row_ids)


def outcome():
    """Events by status, and records paid, after the drain."""
    from sqlalchemy import func, select

    from portal.billing.models import BillingRecord, BillingStatus
    from portal.extensions import db
    from portal.payments.models import WebhookEvent

    statuses = dict(db.session.execute(select(WebhookEvent.status, func.count()).group_by(WebhookEvent.status)).all())
    paid = db.session.scalar(select(func.count()).select_from(BillingRecord)
                             .where(BillingRecord.status == BillingStatus.PAID, BillingRecord.amount_paid == 8500))
    return {status.value: count for status, count in statuses.items()}, paid


def run(jobs=JOBS):
    with scratch_environment("processing") as (app, env):
        with app.app_context():
            events = seed(jobs)
        drained = subprocess.run([sys.executable, "-c", DRAIN], cwd=REPO, env=env, capture_output=True, text=True,
                                 timeout=TIMEOUT_SECONDS, check=True)
        counted = json.loads(drained.stdout.strip().splitlines()[-1])
        seconds = counted["seconds"]
        with app.app_context():
            statuses, paid = outcome()
    per_second = events / seconds
    processed = statuses.get("processed", 0)
    assert processed == events and paid == jobs, (statuses, paid)
    statements, round_trips = counted["statements"] / events, counted["redis"] / events
    figures = {"events": events, "jobs": jobs, "seconds": round(seconds, 2), "events/s": round(per_second),
               f"meets target (≥ {TARGET_PER_SECOND}/s)": per_second >= TARGET_PER_SECOND,
               "events processed": processed, "records paid": paid,
               "SQL statements per event": round(statements, 1), "Redis round trips per event": round(round_trips, 2)}
    late = events - jobs
    markdown = "\n".join([
        f"{jobs} completed jobs, each with a live sent invoice (fake, consistent Stripe ids). Stored with the "
        f"receiver's `store_event` and handed to the worker as the receiver does (`enqueue_committed_event`: the "
        f"first queues one drain job, `process_received_events`, and the rest find it queued): {jobs} "
        f"`invoice.paid` and {late} late `invoice.finalized`/`invoice.sent` (older, refused by precedence and "
        "logged as ignored). One `python worker.py` (`CloseoutWorker`, burst mode, no forking) drains them "
        "against PostgreSQL and Redis on loopback, each event in its own transaction; the clock runs from its "
        "first job to an empty queue. No Stripe call is made: the events agree with the records, so there is no "
        "same-second tie to re-read, and no job was referred, so the referral settlement that runs on each "
        "confirmed payment looks once for a referral and finds none. Statements and Redis round trips are counted "
        "in the worker (BEGIN/COMMIT are not statements here).",
        "",
        "| events | seconds | events/s | processed | records paid | SQL statements per event | Redis round trips per event |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {events} | {seconds:.2f} | {per_second:.0f} | {processed} | {paid} | {statements:.1f} | {round_trips:.2f} |",
        "",
        f"Target ≥ {TARGET_PER_SECOND} events/s: **{'met' if per_second >= TARGET_PER_SECOND else 'NOT met'}**.",
    ])
    return Result(TITLE, figures, markdown)
