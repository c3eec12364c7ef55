"""Process-level faults (issue 8): real processes killed, disconnected or refused, in bounded time.

Each test runs the real stack (a `python worker.py` process, the Stripe sandbox process, PostgreSQL, Redis
and an SMTP server), breaks one piece of it mid-way, and then checks what a business owner relies on: one
invoice or payment link per job, one customer email, one partner transfer, and the right status.
Select them with `pytest -m faults`.
"""
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, select

from portal.billing.models import BillingRecord, BillingStatus, BillingTrigger, CustomerEmail, TriggerStatus
from portal.billing.services import sweep
from portal.extensions import db
from portal.jobs.models import Job, WorkStatus
from portal.payments.models import EventStatus, WebhookEvent
from portal.referrals.models import Payout, PayoutStatus
from tests import factories
from tests.fixtures.billing import completed_by_crew
from tests.fixtures.referrals import ready_partner
from tests.fixtures.worker import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

LINES = [("Labor", "2", 8500), ("Valve", "1", 1999)]
TOTAL = 2 * 8500 + 1999  # no sales tax in tests
FEE = 1900  # 10 % of 18,999, half up
LEASE_SECONDS = 2


# --- Helpers ----------------------------------------------------------------------------------------------

def stripe_objects(stack, kind):
    return stack.sandbox.control("GET", f"objects/{kind}")["data"]


def the_trigger(job_id):
    return db.session.scalars(select(BillingTrigger).where(BillingTrigger.job_id == job_id)).one()


def job_status(job_id):
    return db.session.get(Job, job_id).billing_status


def billed_and_emailed(stack, job_id):
    return lambda: the_trigger(job_id).status == TriggerStatus.DONE and stack.smtp.messages


def restart_worker(stack, **env):
    """Stop the stack's worker and start another with these extra settings (a deploy with a new config)."""
    stack.worker.stop()
    stack.worker.env = {**stack.worker.env, **env}
    stack.worker.start()


def kill_worker(stack):
    """SIGKILL the worker and the scheduler process it forked, as when the machine dies: no cleanup at all."""
    pid = stack.worker.process.pid
    # An orphaned scheduler would live on (it does when only the worker is killed) and hold the scheduler lock.
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in children:
        os.kill(int(child), signal.SIGKILL)
    stack.worker.kill()
    stack.worker.log.close()
    # The dead scheduler's lock would keep every later worker's scheduler (RQ's retries with backoff) idle for up
    # to two minutes (a 61 s lock, retaken every 120 s); the test's next worker and the tests after it need it.
    from rq.scheduler import RQScheduler

    from portal.queue import get_queue

    queue = get_queue()
    queue.connection.delete(RQScheduler.get_locking_key(queue.name))


def hanging_request_arrived(stack):
    """Every armed fault has been taken: the worker's request is being held by the sandbox."""
    return lambda: stack.sandbox.control("GET", "faults")["data"] == []


@pytest.fixture
def short_lease(billing_stack):
    """The billing stack whose worker claims triggers for LEASE_SECONDS instead of five minutes."""
    restart_worker(billing_stack, BILLING_LEASE_SECONDS=str(LEASE_SECONDS))
    billing_stack.app.config["BILLING_LEASE_SECONDS"] = LEASE_SECONDS
    yield billing_stack
    billing_stack.app.config["BILLING_LEASE_SECONDS"] = 300


# --- Worker killed ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("step", ["create", "finalize"])
def test_a_worker_killed_inside_the_invoice_call_bills_once_after_restart_and_sweep(short_lease, login, crew, step):
    """SIGKILL while the worker waits on Stripe; Stripe finishes the call anyway. One invoice, one email."""
    stack = short_lease
    path = "^/v1/invoices$" if step == "create" else "^/v1/invoices/[^/]+/finalize$"
    stack.sandbox.control("POST", "faults", {"method": "POST", "path_regex": path, "mode": "hang",
                                             "hang_seconds": 2, "count": 1})
    client_row = factories.client(billing_mode="invoice", send_mode="auto")
    job_id = completed_by_crew(login, crew, client_row, LINES)
    wait_for(hanging_request_arrived(stack), timeout=30, message=f"the worker inside the invoice {step} call")

    kill_worker(stack)
    killed_at = time.monotonic()
    trigger = the_trigger(job_id)
    assert trigger.status == TriggerStatus.PENDING and trigger.lease_until is not None
    assert stack.smtp.messages == []
    stack.worker.start()

    time.sleep(max(0.0, LEASE_SECONDS + 0.5 - (time.monotonic() - killed_at)))  # the lease runs out
    db.session.expire_all()
    assert [row.id for row in sweep()] == [trigger.id]  # what the five-minute cron run does
    stack.wait_for(billed_and_emailed(stack, job_id), timeout=40, message="billing after the restart")
    time.sleep(1)  # a second, late worker run or email would show up here

    db.session.expire_all()
    (invoice,) = stripe_objects(stack, "invoice")
    assert invoice["status"] == "open" and invoice["total"] == TOTAL
    assert len(invoice["lines"]["data"]) == len(LINES)
    billing_record = db.session.get(Job, job_id).live_billing_record
    assert billing_record.stripe_invoice_id == invoice["id"] and billing_record.status == BillingStatus.SENT
    assert len(stack.smtp.messages) == 1 and db.session.query(CustomerEmail).count() == 1
    assert invoice["hosted_invoice_url"] in stack.smtp.messages[0].get_body(("html",)).get_content()
    assert the_trigger(job_id).attempts == 2


# --- Redis down ---------------------------------------------------------------------------------------------

def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrivateRedis:
    """A redis-server of this test's own on a free port, to be killed and started again (never the shared one)."""

    def __init__(self, directory):
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self):
        self.log = open(self.directory / "redis.log", "ab")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", str(self.directory)], stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self.answers, timeout=10, message="the private redis-server")

    def answers(self):
        from redis import Redis
        from redis.exceptions import ConnectionError as RedisDown

        connection = Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            return connection.ping()
        except RedisDown:
            return False
        finally:
            connection.close()

    def kill(self):
        """SIGKILL, without saving: everything it held is gone, as in a crash without persistence."""
        self.process.kill()
        self.process.wait(timeout=10)
        self.log.close()


def worker_registered(url):
    from redis import Redis
    from rq import Worker

    connection = Redis.from_url(url)
    try:
        return Worker.count(connection=connection) > 0
    finally:
        connection.close()


@pytest.fixture
def private_redis(billing_stack, tmp_path):
    """The billing stack moved onto a private redis-server: the app in this process and a new worker."""
    server = PrivateRedis(tmp_path)
    server.start()
    app = billing_stack.app
    shared_url = app.config["REDIS_URL"]
    app.config["REDIS_URL"] = server.url
    app.extensions.pop("closeout_redis", None)
    restart_worker(billing_stack, REDIS_URL=server.url)
    wait_for(lambda: worker_registered(server.url), timeout=20, message="the worker on the private Redis")
    billing_stack.redis = server
    yield billing_stack
    billing_stack.worker.stop()  # before its Redis goes away for good
    app.config["REDIS_URL"] = shared_url
    app.extensions.pop("closeout_redis", None)
    if server.process.poll() is None:
        server.kill()


def test_redis_down_during_a_closeout_completes_the_job_and_bills_it_once_redis_is_back(private_redis, login,
                                                                                        crew):
    stack = private_redis
    client_row = factories.client(billing_mode="invoice", send_mode="auto")
    job = factories.job(client_row, crew=[crew], items=LINES)
    browser = login(crew)
    stack.redis.kill()

    response = browser.post_form(f"/crew/jobs/{job.id}/complete")

    assert response.status_code == 303
    db.session.expire_all()
    job = db.session.get(Job, job.id)
    assert job.work_status == WorkStatus.COMPLETED and job.billing_status == BillingStatus.PENDING
    trigger = the_trigger(job.id)
    assert trigger.status == TriggerStatus.PENDING
    page = browser.get(f"/crew/jobs/{job.id}")
    assert page.status_code == 200 and job.number in page.get_data(as_text=True)

    time.sleep(2)  # the worker keeps retrying its connection meanwhile
    assert stripe_objects(stack, "invoice") == [] and stack.smtp.messages == []
    stack.redis.start()  # back, and empty: it never heard of the trigger
    assert [row.id for row in sweep()] == [trigger.id]
    stack.wait_for(billed_and_emailed(stack, job.id), timeout=45, message="billing once Redis is back")

    time.sleep(1)
    db.session.expire_all()
    assert stack.worker.process.poll() is None  # the worker lived through the outage
    (invoice,) = stripe_objects(stack, "invoice")
    assert invoice["status"] == "open" and invoice["total"] == TOTAL
    assert job_status(job.id) == BillingStatus.SENT
    assert len(stack.smtp.messages) == 1 and db.session.query(CustomerEmail).count() == 1
    assert sweep() == []  # done: nothing left for the next cron run


# --- PostgreSQL connection dropped --------------------------------------------------------------------------


def all_events_settled(stack):
    """Every delivery made, and every stored event processed (or ignored)."""
    assert stack.sandbox.drain(timeout=20)
    stack.wait_for(lambda: not db.session.scalar(
        select(func.count()).select_from(WebhookEvent).where(WebhookEvent.status == EventStatus.RECEIVED)),
        message="every stored event processed")


def pay_invoice(stack, job_id):
    """The customer pays the job's invoice by card on the hosted page; returns the charge's id."""
    invoice_id = db.session.get(Job, job_id).live_billing_record.stripe_invoice_id
    stack.sandbox.control("POST", f"invoices/{invoice_id}/pay", {"outcome": "card"})
    stripe_client = stack.sandbox.client()
    payment = stripe_client.v1.invoice_payments.list(params={"invoice": invoice_id}).data[0]
    return stripe_client.v1.payment_intents.retrieve(payment.payment.payment_intent).latest_charge


WORKER_IN_AN_EVENT = """
SELECT activity.pid FROM pg_stat_activity activity
JOIN pg_locks lock ON lock.pid = activity.pid
JOIN pg_class relation ON relation.oid = lock.relation
WHERE activity.datname = current_database() AND activity.pid <> pg_backend_pid()
  AND activity.state = 'idle in transaction' AND relation.relname = 'webhook_events' AND lock.mode = 'RowShareLock'
"""


def test_a_dropped_database_connection_mid_event_is_retried_not_lost(synced, login, crew, database_url):
    """pg_terminate_backend on the worker's connection while it holds an event's row lock and waits on Stripe."""
    stack = synced
    client_row = factories.client(billing_mode="invoice", send_mode="auto")
    job_id = completed_by_crew(login, crew, client_row, LINES)
    stack.wait_for(billed_and_emailed(stack, job_id), message="the invoice sent")
    charge_id = pay_invoice(stack, job_id)
    stack.wait_for(lambda: job_status(job_id) == BillingStatus.PAID, message="the payment synced")
    all_events_settled(stack)
    # The refund's handler looks the charge's invoice up at Stripe: hold that call while the test cuts in.
    stack.sandbox.control("POST", "faults", {"method": "GET", "path_regex": "^/v1/invoice_payments$",
                                             "mode": "hang", "hang_seconds": 2, "count": 1})

    stack.sandbox.client().v1.refunds.create(params={"charge": charge_id})

    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as admin:
        pids = wait_for(lambda: admin.execute(WORKER_IN_AN_EVENT).fetchall(), timeout=20,
                        message="the worker inside the refund event")
        assert len(pids) == 1
        assert admin.execute("SELECT pg_terminate_backend(%s)", pids[0]).fetchone() == (True,)
    all_events_settled(stack)

    refunded = db.session.scalars(select(WebhookEvent).where(WebhookEvent.type == "charge.refunded")).one()
    assert refunded.status == EventStatus.PROCESSED and refunded.attempts == 2
    assert refunded.error is None
    billing_record = db.session.get(Job, job_id).live_billing_record
    assert billing_record.status == BillingStatus.REFUNDED == job_status(job_id)
    assert (billing_record.amount_paid, billing_record.amount_refunded) == (TOTAL, TOTAL)
    assert db.session.scalar(select(func.count()).select_from(WebhookEvent)
                             .where(WebhookEvent.status != EventStatus.PROCESSED)) == 0
    assert stack.worker.process.poll() is None


# --- Stripe faults on every step of billing and payout --------------------------------------------------

STEPS = {  # the Stripe call of each step, and how the client bills
    "customer": ("^/v1/customers$", "invoice"),
    "invoice": ("^/v1/invoices$", "invoice"),
    "items": ("^/v1/invoiceitems$", "invoice"),
    "finalize": ("^/v1/invoices/[^/]+/finalize$", "invoice"),
    "send": ("^/v1/invoices/[^/]+/send$", "invoice"),
    "payment_link": ("^/v1/payment_links$", "payment_link"),
    "transfer": ("^/v1/transfers$", "invoice"),
}
FAULTS = {
    "500": {"mode": "500"},  # once, then Stripe answers
    "429": {"mode": "429"},
    "timeout": {"mode": "hang", "hang_seconds": 5},  # past the SDK's 3 s: we give up, Stripe still does it
}


@pytest.fixture
def referred(synced):
    """The synced stack, with a ready partner."""
    synced.partner = ready_partner(synced.sandbox)
    return synced


def pay_bill(stack, job_id):
    """The customer pays by card, on the hosted invoice page or the payment link."""
    billing_record = db.session.get(Job, job_id).live_billing_record
    if billing_record.stripe_invoice_id:
        return pay_invoice(stack, job_id)
    stack.sandbox.control("POST", f"payment_links/{billing_record.stripe_payment_link_id}/pay", {"outcome": "card"})
    return None


def payout_paid(job_id):
    def check():
        payout = db.session.scalar(select(Payout).where(Payout.job_id == job_id))
        return payout is not None and payout.status == PayoutStatus.PAID
    return check


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("step", STEPS)
def test_a_stripe_fault_on_any_step_still_bills_emails_and_pays_the_partner_once(referred, login, crew, step,
                                                                                  fault):
    from tests.fixtures.referrals import referral_row

    stack = referred
    path, billing_mode = STEPS[step]
    stack.sandbox.control("POST", "faults", {"method": "POST", "path_regex": path, "count": 1, **FAULTS[fault]})
    client_row = factories.client(billing_mode=billing_mode, send_mode="auto")
    referral_row(stack.partner, client=client_row)
    job_id = completed_by_crew(login, crew, client_row, LINES)
    stack.wait_for(billed_and_emailed(stack, job_id), timeout=45, message=f"billing after a {fault} on {step}")
    pay_bill(stack, job_id)
    stack.wait_for(payout_paid(job_id), timeout=45, message=f"the partner's transfer after a {fault} on {step}")
    all_events_settled(stack)
    assert stack.sandbox.control("GET", "faults")["data"] == []  # the fault was met
    if fault == "timeout":
        time.sleep(3)  # the abandoned request finishes at Stripe: it must not make a second object

    db.session.expire_all()
    kind = "invoice" if billing_mode == "invoice" else "payment_link"
    (stripe_bill,) = stripe_objects(stack, kind)
    other = "payment_link" if kind == "invoice" else "invoice"
    assert stripe_objects(stack, other) == []
    assert len(stripe_objects(stack, "customer")) == (1 if kind == "invoice" else 0)
    billing_record = db.session.get(Job, job_id).live_billing_record
    if kind == "invoice":
        assert stripe_bill["id"] == billing_record.stripe_invoice_id
        assert (stripe_bill["status"], stripe_bill["total"], stripe_bill["amount_paid"]) == ("paid", TOTAL, TOTAL)
        assert len(stripe_bill["lines"]["data"]) == len(LINES)
    else:
        assert stripe_bill["id"] == billing_record.stripe_payment_link_id
    assert billing_record.status == BillingStatus.PAID == job_status(job_id)
    assert billing_record.amount_paid == TOTAL
    assert len(stack.smtp.messages) == 1 and db.session.query(CustomerEmail).count() == 1
    assert db.session.query(BillingRecord).count() == 1
    (transfer,) = stripe_objects(stack, "transfer")
    payout = db.session.scalars(select(Payout)).one()
    assert (transfer["amount"], transfer["destination"]) == (FEE, stack.partner.stripe_account_id)
    assert payout.stripe_transfer_id == transfer["id"] and payout.amount == FEE
    if step == "transfer":
        assert payout.attempts == 2
    else:
        assert the_trigger(job_id).attempts == 2
