"""Webhook load (issue 8): 1,000+ real Stripe events, 30 % of them twice, shuffled, sent at full speed.

The events come from real sandbox activity: jobs billed through the pipeline's own Stripe calls, then paid,
declined, debited, settled, refunded and disputed through the sandbox. The sandbox's own delivery is off (no
endpoint is registered); the test signs each event as Stripe does and posts them all from a thread pool to the
app served over real HTTP, while a real `python worker.py` processes them (and makes the partners' transfers).
Afterwards nothing may be lost or doubled, and every job must agree with the sandbox.
"""
import hashlib
import hmac
import json
import os
import random
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from sqlalchemy import func, select

from portal.billing import pipeline
from portal.billing.models import BillingRecord, BillingStatus as S
from portal.extensions import db
from portal.jobs.services import complete_job
from portal.payments.models import EventStatus, WebhookEvent
from portal.queue import get_queue
from portal.referrals.models import Payout, PayoutStatus
from tests import factories
from tests.fixtures.referrals import ready_partner, referral_row
from tests.fixtures.worker import REPO, WorkerProcess, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

MIN_EVENTS = 1000
DUPLICATE_SHARE = 0.30
SENDERS = 8
SEED = 8
SECRET = "whsec_load_test_secret"
LINES = [("Labor", "2", 8500), ("Valve", "1", 1999)]
TOTAL = 18999
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# What happens to each job's bill in the sandbox, in turn (payment links only take cards here).
SCENARIOS = ["card", "card+partial_refund", "card+full_refund", "declined+card", "bank_debit",
             "bank_debit+succeeded", "bank_debit+failed", "unpaid", "link_card", "card+dispute"]


@pytest.fixture
def load_stack(app, stripe_sandbox, smtp_server, live_server, tmp_path):
    """The app on the sandbox and SMTP, served over HTTP; the worker is started by the test when it wants."""
    settings = {"STRIPE_API_BASE": stripe_sandbox.url, "STRIPE_SECRET_KEY": stripe_sandbox.api_key,
                "SMTP_HOST": smtp_server.host, "SMTP_PORT": str(smtp_server.port), "BILLING_RETRY_SECONDS": "1,1,2",
                "STRIPE_TIMEOUT_SECONDS": "10", "PUBLIC_URL": "http://portal.test"}
    saved = {key: app.config.get(key) for key in (*settings, "STRIPE_WEBHOOK_SECRET")}
    app.config.update({**settings, "SMTP_PORT": smtp_server.port, "STRIPE_TIMEOUT_SECONDS": 10.0,
                       "STRIPE_WEBHOOK_SECRET": SECRET})
    app.extensions.pop("closeout_stripe", None)
    worker = WorkerProcess({**os.environ, **settings, "CLOSEOUT_ENV": "test", "PYTHONUNBUFFERED": "1"},
                           tmp_path / "worker.log")
    yield stripe_sandbox, live_server, worker
    worker.stop()
    app.config.update(saved)
    app.extensions.pop("closeout_stripe", None)


# --- Real sandbox activity --------------------------------------------------------------------------------

def bill(client_row):
    """Complete a job and bill it with the pipeline's own Stripe calls (no proof PDF or email: not under test)."""
    job = factories.job(client_row, items=LINES)
    complete_job(job, by=factories.system())
    db.session.commit()
    trigger = job.billing_triggers[-1]
    billing_record = pipeline.open_record(trigger)
    pipeline.bill(billing_record)
    pipeline.finish(trigger)
    assert billing_record.status == S.SENT
    return billing_record


def invoice_intent(stripe_client, invoice_id):
    payments = stripe_client.v1.invoice_payments.list(params={"invoice": invoice_id}).data
    return stripe_client.v1.payment_intents.retrieve(payments[0].payment.payment_intent)


def play(sandbox, stripe_client, billing_record, scenario):
    """What the customer (and their bank) do with this bill in the sandbox."""
    if scenario == "link_card":
        sandbox.control("POST", f"payment_links/{billing_record.stripe_payment_link_id}/pay", {"outcome": "card"})
        return
    invoice_id = billing_record.stripe_invoice_id
    if scenario == "unpaid":
        return
    if scenario.startswith("declined"):
        sandbox.control("POST", f"invoices/{invoice_id}/pay", {"outcome": "card_declined"})
    outcome = "bank_debit" if scenario.startswith("bank_debit") else "card"
    sandbox.control("POST", f"invoices/{invoice_id}/pay", {"outcome": outcome})
    intent = invoice_intent(stripe_client, invoice_id)
    if "+succeeded" in scenario or "+failed" in scenario:
        sandbox.control("POST", f"payment_intents/{intent.id}/settle", {"outcome": scenario.split("+")[1]})
    elif scenario.endswith("refund"):
        amount = intent.amount // 3 if "partial" in scenario else intent.amount
        stripe_client.v1.refunds.create(params={"charge": intent.latest_charge, "amount": amount})
    elif scenario.endswith("dispute"):
        sandbox.control("POST", f"charges/{intent.latest_charge}/dispute", {"reason": "fraudulent"})


def sandbox_events(sandbox):
    return sandbox.control("GET", "objects/event")["data"]


def build_activity(sandbox):
    """Bill and play jobs until the sandbox holds at least MIN_EVENTS events; returns the records' ids."""
    stripe_client = sandbox.client()
    partner = ready_partner(sandbox)
    clients = {}
    for mode in ("invoice", "payment_link"):
        for referred in (True, False):
            clients[mode, referred] = factories.client(billing_mode=mode, send_mode="auto")
            if referred:
                referral_row(partner, client=clients[mode, referred])
    played = {}
    n = 0
    while len(sandbox_events(sandbox)) < MIN_EVENTS:
        for scenario in SCENARIOS:
            mode = "payment_link" if scenario.startswith("link") else "invoice"
            # Referred and not alternate per round, so that every scenario meets both.
            billing_record = bill(clients[mode, (n + n // len(SCENARIOS)) % 2 == 0])
            play(sandbox, stripe_client, billing_record, scenario)
            played[billing_record.id] = scenario
            n += 1
    return played


# --- Sending -----------------------------------------------------------------------------------------------

def signed(body):
    timestamp = int(time.time())
    signature = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={signature}"


def post(url, body):
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json; charset=utf-8", "Stripe-Signature": signed(body)})
    with NO_PROXY.open(request, timeout=60) as response:
        return response.status, json.loads(response.read())["duplicate"]


def worker_idle():
    queue = get_queue()
    registries = (StartedJobRegistry(queue=queue), ScheduledJobRegistry(queue=queue))
    return queue.count == 0 and all(registry.count == 0 for registry in registries)


# --- The sandbox as the oracle ---------------------------------------------------------------------------

def expected_from_sandbox(stripe_client, billing_record):
    """(status, amount paid, amount refunded) as the sandbox's objects say now, independently of our code."""
    if billing_record.stripe_payment_link_id:
        sessions = stripe_client.v1.checkout.sessions.list(
            params={"payment_link": billing_record.stripe_payment_link_id}).data
        paid = [s for s in sessions if s.status == "complete" and s.payment_status == "paid"]
        return (S.PAID, paid[0].amount_total, 0) if paid else (S.SENT, 0, 0)
    invoice = stripe_client.v1.invoices.retrieve(billing_record.stripe_invoice_id)
    payments = stripe_client.v1.invoice_payments.list(params={"invoice": invoice.id}).data
    intent = stripe_client.v1.payment_intents.retrieve(payments[0].payment.payment_intent) if payments else None
    charge = stripe_client.v1.charges.retrieve(intent.latest_charge) if intent and intent.latest_charge else None
    refunded = charge.amount_refunded if charge else 0
    if invoice.status == "paid":
        if charge.disputed:
            status = S.DISPUTED
        elif refunded >= charge.amount:
            status = S.REFUNDED
        elif refunded:
            status = S.PARTIALLY_REFUNDED
        else:
            status = S.PAID
    elif intent is not None and intent.status == "processing":
        status = S.PROCESSING
    elif intent is not None and intent.status == "requires_payment_method":
        status = S.PAYMENT_FAILED
    else:
        status = S.SENT
    return status, invoice.amount_paid, refunded


CONFIRMED = {S.PAID, S.PARTIALLY_REFUNDED, S.REFUNDED, S.DISPUTED}


def test_a_thousand_shuffled_events_with_duplicates_lose_nothing_and_double_nothing(app, load_stack):
    sandbox, live_server, worker = load_stack
    started = time.monotonic()
    played = build_activity(sandbox)
    events = sandbox_events(sandbox)
    get_queue().empty()  # the billing triggers were run here, in the test
    setup_seconds = time.monotonic() - started
    rng = random.Random(SEED)
    duplicates = rng.sample(events, round(len(events) * DUPLICATE_SHARE))
    deliveries = [json.dumps(event).encode() for event in events + duplicates]
    rng.shuffle(deliveries)

    worker.start()
    url = live_server.url + "/webhooks/stripe"
    sending = time.monotonic()
    with ThreadPoolExecutor(max_workers=SENDERS) as pool:
        answers = list(pool.map(lambda body: post(url, body), deliveries))
    send_seconds = time.monotonic() - sending
    wait_for(lambda: db.session.scalar(select(func.count()).select_from(WebhookEvent)
                                       .where(WebhookEvent.status == EventStatus.RECEIVED)) == 0
             and not db.session.scalar(select(func.count()).select_from(Payout)
                                       .where(Payout.status == PayoutStatus.PENDING))
             and worker_idle(), timeout=300, interval=0.5, message="the worker to process every event")
    drained_seconds = time.monotonic() - sending
    db.session.expire_all()

    # Every delivery acknowledged; each event stored once, and processed (or ignored as a type we don't use).
    assert Counter(status for status, _ in answers) == {200: len(deliveries)}
    assert sum(duplicate for _, duplicate in answers) == len(duplicates)
    stored = db.session.execute(select(WebhookEvent.stripe_event_id, WebhookEvent.status, WebhookEvent.type,
                                       WebhookEvent.attempts, WebhookEvent.received_at,
                                       WebhookEvent.processed_at)).all()
    assert sorted(row.stripe_event_id for row in stored) == sorted(event["id"] for event in events)  # 0 lost, 0 doubled
    statuses = Counter(row.status for row in stored)
    assert set(statuses) <= {EventStatus.PROCESSED, EventStatus.IGNORED}, statuses
    from portal.payments.handlers import HANDLERS

    for row in stored:
        if row.type in HANDLERS:
            assert row.status == EventStatus.PROCESSED, (row.stripe_event_id, row.type)

    # Every job agrees with the sandbox: status and amounts.
    stripe_client = sandbox.client()
    records = db.session.scalars(select(BillingRecord).order_by(BillingRecord.id)).all()
    assert sorted(r.id for r in records) == sorted(played) and all(r.live for r in records)
    mismatches = []
    for billing_record in records:
        expected = expected_from_sandbox(stripe_client, billing_record)
        ours = (billing_record.status, billing_record.amount_paid, billing_record.amount_refunded)
        if ours != expected or billing_record.job.billing_status != expected[0]:
            mismatches.append((billing_record.id, played[billing_record.id], ours, expected))
    assert mismatches == []
    seen = Counter(played[r.id] for r in records)

    # One payout per paid referred job, at most one transfer per payout, and the money in it right.
    payouts = db.session.scalars(select(Payout)).all()
    assert Counter(p.job_id for p in payouts).most_common(1)[0][1] == 1
    referred_paid = {r.job_id for r in records if r.referral_id is not None and r.status in CONFIRMED}
    assert {p.job_id for p in payouts} == referred_paid
    transfers = sandbox.control("GET", "objects/transfer")["data"]
    per_payout = Counter(t["metadata"]["payout_id"] for t in transfers)
    assert all(count == 1 for count in per_payout.values())
    by_id = {t["id"]: t for t in transfers}
    assert not [p.id for p in payouts if p.status == PayoutStatus.FAILED]
    for payout in payouts:
        if payout.stripe_transfer_id is None:
            assert str(payout.id) not in per_payout and payout.status != PayoutStatus.PAID
            continue
        transfer = by_id[payout.stripe_transfer_id]
        assert transfer["amount"] - transfer["amount_reversed"] == payout.amount - payout.amount_reversed
    assert worker.process.poll() is None

    figures = {
        "jobs": len(records), "scenarios": dict(seen), "distinct_events": len(events),
        "duplicates": len(duplicates), "deliveries": len(deliveries), "senders": SENDERS,
        "handled_types": sum(1 for e in events if e["type"] in HANDLERS),
        "send_seconds": round(send_seconds, 2), "deliveries_per_second": round(len(deliveries) / send_seconds),
        "processed_seconds": round(drained_seconds, 2),
        "events_per_second_end_to_end": round(len(events) / drained_seconds),
        "setup_seconds": round(setup_seconds, 1), "events_stored": len(stored),
        "event_statuses": {status.value: count for status, count in statuses.items()},
        "events_retried": sum(1 for row in stored if row.attempts > 1),
        "slowest_event_seconds": round(max((row.processed_at - row.received_at).total_seconds() for row in stored), 2),
        "payouts": len(payouts), "transfers": len(transfers),
        "reversals": sum(1 for t in transfers if t["amount_reversed"]), "lost": 0, "doubled": 0,
        "jobs_mismatched": len(mismatches),
    }
    print("\nwebhook load:", json.dumps(figures, indent=2))
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    Path(artifacts / "webhook-load.json").write_text(json.dumps(figures, indent=2) + "\n")
    Path(artifacts / "webhook-load-worker.log").write_text(worker.output())
