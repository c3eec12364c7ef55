"""Model-based test of the money flow (issue 8): a Hypothesis state machine over billing, payments and payouts.

Real PostgreSQL, Redis, SMTP and one Stripe sandbox process. The test plays the RQ worker: it runs the task
functions itself, each inside an RQ job with retries left (`rq.job.Job.perform`, as RQ's worker does), so it
chooses the interleaving. Webhooks are the sandbox's own events, captured from its event log and posted
signed to `/webhooks/stripe` through the test client, so duplicates, order and concurrency are the machine's
choice. After every step the invariants of issue 8 are checked; after a quiet point (everything billed, every
event delivered, reconcile run) our database must agree with the sandbox, job by job.

The figures of the last run are written to test-artifacts/money_flow_model.json (docs/reliability.md).
"""
import hashlib
import hmac
import importlib
import json
import os
import re
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition, rule,
                                 run_state_machine_as_test)
from rq import Retry
from rq.job import Job as RQJob
from sqlalchemy import func, select, text, update

from portal import timeutil
from portal.audit.services import Actor
from portal.billing import emails, stripe_gateway as gateway
from portal.billing.models import BillingRecord, BillingStatus as S, BillingTrigger, CustomerEmail, EmailKind, \
    TriggerStatus
from portal.extensions import db
from portal.jobs.models import Job
from portal.payments.handlers import HANDLED_EVENTS
from portal.payments.models import EventStatus, WebhookEvent
from portal.queue import QUEUE_NAMES, get_queue, redis_connection
from portal.referrals.models import AccountStatus, DisputePolicy, Partner, Payout, PayoutStatus
from portal.referrals.settlement import refresh_account, start_onboarding
from tests import factories
from tests.fixtures.referrals import partner_row, referral_row
from tests.fixtures.stripe_sandbox import SandboxControlError

OFFICE = Actor.system("model test office")
ARTIFACT = Path(__file__).resolve().parents[1] / "test-artifacts" / "money_flow_model.json"
RETRIES = 3  # as BILLING_RETRY_SECONDS "1,1,2": RQ retries a failing task three times, then it is final
DAYS_UNTIL_DUE = 7
DAY = 24 * 3600
WON = frozenset({"won", "warning_closed"})  # the bank's decisions that leave the money with us
DECIDED = WON | {"lost"}
STRIPE_TIMEOUT = 1.0  # a `hang` fault outlasts it: the client gives up while the sandbox still does the work
HANG_SECONDS = 2
# Bounded for CI; raise them locally for a longer hunt (MONEY_FLOW_EXAMPLES=200 MONEY_FLOW_STEPS=50).
EXAMPLES = int(os.environ.get("MONEY_FLOW_EXAMPLES", "25"))
STEPS = int(os.environ.get("MONEY_FLOW_STEPS", "30"))
FEE_BASIS_POINTS = {"ready": 1000, "onboarding": 250}

# Where a Stripe fault lands during billing: (method, path regex).
BILLING_FAULT_POINTS = [
    ("POST", r"^/v1/customers$"),
    ("POST", r"^/v1/invoices$"),
    ("POST", r"^/v1/invoiceitems$"),
    ("GET", r"^/v1/invoiceitems"),
    ("GET", r"^/v1/invoices"),
    ("POST", r"/finalize$"),
    ("POST", r"/send$"),
    ("POST", r"^/v1/payment_links$"),
]
FAULT_MODES = ["500", "429", "reset", "hang"]
# "Kill the worker here": the call completes (Stripe or SMTP did the work), then the process dies before saving.
KILL_POINTS = {
    "customer": (gateway, "create_customer"),
    "invoice": (gateway, "create_invoice"),
    "line": (gateway, "add_invoice_item"),
    "finalize": (gateway, "finalize_invoice"),
    "send": (gateway, "send_invoice"),
    "link": (gateway, "create_payment_link"),
    "email": (emails, "deliver"),
}

# How one billing attempt goes: cleanly, through a Stripe fault at some step, or with the worker killed after a step.
TROUBLE = st.one_of(st.just("clean"), st.tuples(st.sampled_from(BILLING_FAULT_POINTS), st.sampled_from(FAULT_MODES)),
                    st.sampled_from(sorted(KILL_POINTS)))
# A completed job: billing mode, referred by which partner, labor units and unit amount, a second line, and how a
# quick worker's first attempt goes (None: the trigger waits for the worker rule).
JOBS = st.tuples(st.sampled_from(["invoice", "payment_link"]), st.sampled_from([None, "ready", "onboarding"]),
                 st.integers(1, 3), st.integers(1, 40_000), st.booleans(), st.one_of(st.none(), TROUBLE))

# shared/billing-states.md, "Precedence", restated for the test (not imported from portal.payments.sync):
# each set is one rank, in increasing order; equals may replace each other (the newer event wins).
RANKS = [{S.PENDING, S.FAILED}, {S.DRAFT}, {S.SENT}, {S.PROCESSING, S.PAYMENT_FAILED, S.OVERDUE}, {S.PAID},
         {S.PARTIALLY_REFUNDED, S.DISPUTED}, {S.REFUNDED}]
LEVEL = {status: level for level, statuses in enumerate(RANKS) for status in statuses}


def may_follow(old, new, *, dispute_decided=False):
    """Whether a record may move from `old` to `new` by the documented precedence (and its one refinement:
    a dispute decided in our favour returns the record to paid, or partly refunded)."""
    if old == new:
        return True
    if old == S.DISPUTED and new in (S.PAID, S.PARTIALLY_REFUNDED):
        return dispute_decided
    if old == S.VOID:
        return False
    if old == S.UNCOLLECTIBLE:
        return new == S.PAID
    if new in (S.VOID, S.UNCOLLECTIBLE):
        return LEVEL[old] < LEVEL[S.PAID]
    return LEVEL[new] >= LEVEL[old]


def half_up(numerator, denominator):
    """numerator / denominator rounded half up, for non-negative integers."""
    return (2 * numerator + denominator) // (2 * denominator)


class WorkerKilled(BaseException):
    """SIGKILL in the middle of a task: no `except Exception` runs, nothing more is committed."""


FIGURES = Counter()  # what the machine tried, for docs/reliability.md


def run_as_rq(dotted_name, *args, retries_left=RETRIES):
    """Run a task as RQ's worker does: inside an RQ job whose retries decide whether a failure is final."""
    job = RQJob.create(dotted_name, args=args, connection=redis_connection(), retry=Retry(max=RETRIES))
    job.retries_left = retries_left
    return job.perform()


class BusinessClock:
    """Closeout's clock, kept level with the sandbox's: in production both are real time.

    Advancing only Stripe's clock would make every Stripe event look newer than anything Closeout does "now"
    (a tie re-read, the overdue sweep), which cannot happen in production; so `utcnow` in every portal module
    reads this clock while the test runs. Column defaults bound at import keep real time; nothing compares them.
    """

    real = staticmethod(timeutil.utcnow)
    # Modules that import `utcnow` by name and are otherwise imported lazily, so all are patched up front.
    MODULES = ("portal.billing.tasks", "portal.billing.pipeline", "portal.billing.emails", "portal.billing.services",
               "portal.payments.tasks", "portal.payments.reconcile", "portal.payments.handlers",
               "portal.payments.sync", "portal.referrals.tasks", "portal.referrals.settlement",
               "portal.referrals.attribution", "portal.jobs.services")

    def __init__(self):
        self.offset = 0

    def now(self):
        return self.real() + timedelta(seconds=self.offset)

    def install(self, monkeypatch):
        for name in self.MODULES:
            importlib.import_module(name)
        for name, module in list(sys.modules.items()):
            if (name == "portal" or name.startswith("portal.")) and getattr(module, "utcnow", None) is self.real:
                monkeypatch.setattr(module, "utcnow", self.now)


def sign(secret, body):
    timestamp = int(time.time())
    signature = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={signature}"


def post_event(client, secret, event):
    """POST one sandbox event to the receiver, signed as Stripe signs it; returns the receiver's JSON answer."""
    body = json.dumps(event).encode()
    response = client.post("/webhooks/stripe", data=body,
                           headers={"Stripe-Signature": sign(secret, body), "Content-Type": "application/json"})
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def bills_in_inbox(smtp):
    """How many bill emails the customers received, by job number (subject "Job J-00012: $212.50 due")."""
    subjects = (re.match(r"Job (\S+): .* due", str(message["Subject"])) for message in smtp.messages)
    return Counter(match.group(1) for match in subjects if match)


def empty_world(app):
    """Every table and queue emptied (as the `app` fixture does after a test), for the next example."""
    db.session.remove()
    for name in QUEUE_NAMES:
        get_queue(name).empty()
    tables = ", ".join(f'"{table.name}"' for table in db.metadata.sorted_tables)
    with db.engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
def money_flow(app, stripe_sandbox, smtp_server, monkeypatch):
    """The app pointed at the sandbox and SMTP, with no worker: the test runs every task itself."""
    saved = {key: app.config.get(key) for key in ("STRIPE_API_BASE", "STRIPE_SECRET_KEY", "STRIPE_TIMEOUT_SECONDS",
                                                   "BILLING_RETRY_SECONDS", "PUBLIC_URL", "STRIPE_WEBHOOK_SECRET")}
    app.config.update(STRIPE_API_BASE=stripe_sandbox.url, STRIPE_SECRET_KEY=stripe_sandbox.api_key,
                      STRIPE_TIMEOUT_SECONDS=STRIPE_TIMEOUT, BILLING_RETRY_SECONDS="1,1,2",
                      PUBLIC_URL="http://portal.test")
    app.extensions.pop("closeout_stripe", None)
    clock = BusinessClock()
    clock.install(monkeypatch)
    yield app, stripe_sandbox, smtp_server, clock
    stripe_sandbox.control("DELETE", "faults")
    app.config.update(saved)
    app.extensions.pop("closeout_stripe", None)


@pytest.mark.timeout(1200)
def test_money_flow_model(money_flow):
    app, sandbox, smtp, clock = money_flow
    FIGURES.clear()
    started = time.monotonic()

    class MoneyFlow(RuleBasedStateMachine):
        """Jobs completed, billed through faults and kills, paid, refunded, disputed, synced and settled."""

        def __init__(self):
            super().__init__()
            empty_world(app)
            sandbox.flush()  # its clock back to real time, and so ours
            clock.offset = 0
            smtp.messages.clear()
            smtp.envelopes.clear()
            endpoint = sandbox.client().v1.webhook_endpoints.create(
                params={"url": "http://127.0.0.1:9/webhooks/stripe", "enabled_events": list(HANDLED_EVENTS)})
            # Stripe cannot reach us: the test delivers by hand, and reconcile sees them as undelivered.
            sandbox.control("POST", f"webhook_endpoints/{endpoint.id}/chaos", {"drop": True})
            app.config["STRIPE_WEBHOOK_SECRET"] = endpoint.secret
            self.secret = endpoint.secret
            self.partners = {"ready": self.make_partner("ready"), "onboarding": self.make_partner("onboarding")}
            self.job_ids = []
            self.seen_events = set()
            self.pending = []  # captured events not yet delivered, oldest first
            self.delivered = []  # delivered at least once, for duplicates
            self.history = {}  # billing record id → the statuses it has been seen in
            self.retries = {}  # ("trigger" | "event" | "payout", id) → retries RQ has left
            FIGURES["examples"] += 1

        def make_partner(self, kind):
            partner = partner_row(name=f"{kind.title()} Realty", basis_points=FEE_BASIS_POINTS[kind],
                                  email=f"{kind}@partners.example",
                                  dispute_policy=DisputePolicy.HOLD if kind == "ready" else DisputePolicy.REVERSE)
            start_onboarding(partner, by=OFFICE)
            if kind == "ready":
                sandbox.control("POST", f"accounts/{partner.stripe_account_id}/onboard")
                refresh_account(partner, by=OFFICE)
                db.session.commit()
                assert partner.account_status == AccountStatus.READY
            return partner.id

        def teardown(self):
            try:
                self.settle_everything_and_compare(final=True)
            finally:
                sandbox.control("DELETE", "faults")
                sandbox.close_clients()
                db.session.remove()

        # --- Running tasks as the worker ----------------------------------------------------------------

        def run_task(self, kind, row_id, dotted_name):
            """One attempt of a task; a transient failure uses up one of RQ's retries. Returns the error, if any."""
            key = (kind, row_id)
            left = self.retries.setdefault(key, RETRIES)
            try:
                run_as_rq(dotted_name, row_id, retries_left=left)
            except gateway.StripeUnavailable as error:  # the task noted it on its row; RQ would schedule the retry
                db.session.rollback()
                self.retries[key] = max(left - 1, 0)
                FIGURES["task failures"] += 1
                return error
            return None

        def pending_trigger_ids(self):
            return db.session.scalars(select(BillingTrigger.id).where(BillingTrigger.status == TriggerStatus.PENDING)
                                      .order_by(BillingTrigger.id)).all()

        def run_trigger(self, trigger_id):
            return self.run_task("trigger", trigger_id, "portal.billing.tasks.process_billing_trigger")

        @contextmanager
        def fault(self, method, path_regex, mode):
            fault = {"method": method, "path_regex": path_regex, "mode": mode, "count": 1}
            if mode == "hang":
                fault["hang_seconds"] = HANG_SECONDS
            sandbox.control("POST", "faults", fault)
            FIGURES["faults armed"] += 1
            try:
                yield
            finally:
                left = sandbox.control("GET", "faults")["data"]
                if not left:
                    FIGURES["faults injected"] += 1
                sandbox.control("DELETE", "faults")  # also releases a hanging request, which then does its work
                if mode == "hang":
                    time.sleep(0.05)

        # --- Capturing and delivering events --------------------------------------------------------------

        def capture(self):
            """New events in the sandbox's log join the pending list, oldest first."""
            events = sandbox.control("GET", "objects/event")["data"]
            for event in reversed(events):
                if event["id"] in self.seen_events:
                    continue
                self.seen_events.add(event["id"])
                if event["type"] in HANDLED_EVENTS:
                    self.pending.append(event)
                    FIGURES["events captured"] += 1

        def deliver(self, event, client=None):
            """POST the event signed, as Stripe does; a new one is processed at once, as the worker would."""
            answer = post_event(client or app.test_client(), self.secret, event)
            FIGURES["deliveries"] += 1
            if answer["duplicate"]:
                FIGURES["duplicate deliveries"] += 1
                return None
            row_id = db.session.scalar(select(WebhookEvent.id).where(WebhookEvent.stripe_event_id == event["id"]))
            db.session.commit()
            return row_id

        def deliver_and_process(self, event):
            row_id = self.deliver(event)
            if event not in self.delivered:
                self.delivered.append(event)
            if row_id is not None:
                self.run_task("event", row_id, "portal.payments.tasks.process_webhook_event")

        def process_received(self):
            """The worker's retries of stored events still waiting (an earlier attempt failed)."""
            waiting = db.session.scalars(select(WebhookEvent.id).where(WebhookEvent.status == EventStatus.RECEIVED)
                                         .order_by(WebhookEvent.id)).all()
            db.session.commit()
            for row_id in waiting:
                self.run_task("event", row_id, "portal.payments.tasks.process_webhook_event")

        # --- Reading the sandbox ----------------------------------------------------------------------------

        def objects(self, kind):
            return sandbox.control("GET", f"objects/{kind}")["data"]

        # --- Rules: work ---------------------------------------------------------------------------------------

        def complete(self, mode, referred, units, unit_amount, extra):
            from portal.jobs.services import complete_job

            client_row = factories.client(billing_mode=mode, send_mode="auto", days_until_due=DAYS_UNTIL_DUE)
            if referred:
                referral_row(db.session.get(Partner, self.partners[referred]), client=client_row)
            items = [("Labor", str(units), unit_amount)] + ([("Valve", "1", 1999)] if extra else [])
            job = factories.job(client_row, items=items)
            complete_job(job, by=OFFICE)
            db.session.commit()
            self.job_ids.append(job.id)
            FIGURES["jobs completed"] += 1
            return job.billing_triggers[-1].id

        @initialize(jobs=st.lists(JOBS, min_size=2, max_size=4))
        def a_few_jobs_completed(self, jobs):
            for *job, trouble in jobs:
                self.complete_a_job((*job, trouble))

        @rule(job=JOBS)
        def complete_a_job(self, job):
            """A job completed; a quick worker may take its trigger at once (cleanly, through a fault, or dying)."""
            *job, trouble = job
            trigger_id = self.complete(*job)
            if trouble is not None:
                self.bill(trigger_id, trouble)

        @rule(pick=st.integers(0, 10**6), trouble=TROUBLE)
        def worker_bills(self, pick, trouble):
            """The worker takes a pending trigger (a first attempt, RQ's retry, or the sweeper's after a kill)."""
            pending = self.pending_trigger_ids()
            if pending:
                self.bill(pending[pick % len(pending)], trouble)

        def bill(self, trigger_id, trouble):
            if trouble == "clean":
                self.run_trigger(trigger_id)
            elif isinstance(trouble, str):
                self.kill_billing_midway(trigger_id, trouble)
            else:
                (method, path), mode = trouble
                with self.fault(method, path, mode):
                    self.run_trigger(trigger_id)

        def kill_billing_midway(self, trigger_id, point):
            module, name = KILL_POINTS[point]
            real = getattr(module, name)

            def then_die(*args, **kwargs):
                real(*args, **kwargs)
                raise WorkerKilled(point)

            try:
                with mock.patch.object(module, name, then_die):
                    self.run_trigger(trigger_id)
            except WorkerKilled:
                FIGURES["kills"] += 1
                db.session.rollback()
                # Five minutes later the dead worker's lease has run out; the sweeper enqueues a fresh RQ job.
                db.session.execute(update(BillingTrigger).where(BillingTrigger.id == trigger_id)
                                   .values(lease_until=func.now() - text("interval '1 second'")))
                db.session.commit()
                self.retries[("trigger", trigger_id)] = RETRIES

        def office_retries_failed_billing(self):
            from portal.billing.services import retry_trigger

            failed = db.session.scalars(select(BillingTrigger).where(BillingTrigger.status == TriggerStatus.FAILED)
                                        .order_by(BillingTrigger.id)).all()
            for trigger in failed:
                if trigger.job.billing_status == S.FAILED:
                    retry_trigger(trigger, by=OFFICE)
                    self.retries[("trigger", trigger.id)] = RETRIES
                    FIGURES["office retries"] += 1
            db.session.commit()

        # --- Rules: the customer -------------------------------------------------------------------------------

        def payable(self):
            """(kind, Stripe id) of bills a customer can pay now.

            An open invoice (Stripe sends its hosted page itself), and an active payment link not yet paid whose
            address reached the customer's inbox: only our email carries it.
            """
            intents = {intent["id"]: intent for intent in self.objects("payment_intent")}
            bills = [("invoice", invoice["id"]) for invoice in self.objects("invoice") if invoice["status"] == "open"]
            sessions = self.objects("checkout.session")
            inbox = " ".join(m.get_body(preferencelist=("plain", "html")).get_content() for m in smtp.messages)
            for link in self.objects("payment_link"):
                own = [s for s in sessions if s["payment_link"] == link["id"]]
                settled = any(s["payment_status"] == "paid" or intents[s["payment_intent"]]["status"] == "processing"
                              for s in own)
                if link["active"] and not settled and link["id"] in inbox:
                    bills.append(("payment_link", link["id"]))
            return sorted(bills)

        @rule(choice=st.integers(0, 10**6), pick=st.integers(0, 10**6),
              outcome=st.sampled_from(["card", "card", "card_declined", "bank_debit"]),
              settlement=st.sampled_from(["succeeded", "failed"]))
        def customer_pays(self, choice, pick, outcome, settlement):
            """A customer pays (card, declined card, bank debit), or a bank debit in flight settles."""
            options = []
            if self.payable():
                options.append(lambda: self.pay(pick, outcome))
            if any(i["status"] == "processing" for i in self.objects("payment_intent")):
                options.append(lambda: self.bank_debit_settles(pick, settlement))
            if options:
                options[choice % len(options)]()

        @rule(choice=st.integers(0, 10**6), pick=st.integers(0, 10**6), share=st.sampled_from([None, 1, 2, 3]),
              outcome=st.sampled_from(["won", "lost"]))
        def money_goes_back(self, choice, pick, share, outcome):
            """A refund (all of what is left, or a part), a dispute, or the bank's decision on one."""
            charges = self.refundable_charges()
            options = []
            if charges:
                options.append(lambda: self.refund(pick, share))
            if any(c["amount_refunded"] == 0 for c in charges):
                options.append(lambda: self.dispute(pick))
            if self.open_disputes():
                options.append(lambda: self.decide_dispute(pick, outcome))
            if options:
                options[choice % len(options)]()

        def pay(self, pick, outcome):
            bills = self.payable()
            if not bills:
                return
            kind, stripe_id = bills[pick % len(bills)]
            path = f"invoices/{stripe_id}/pay" if kind == "invoice" else f"payment_links/{stripe_id}/pay"
            try:
                sandbox.control("POST", path, {"outcome": outcome})
            except SandboxControlError as error:  # an invoice payment already processing
                assert error.status == 400, error.body
                return
            FIGURES[f"payments ({outcome})"] += 1

        def bank_debit_settles(self, pick, outcome):
            processing = sorted(i["id"] for i in self.objects("payment_intent") if i["status"] == "processing")
            if processing:
                sandbox.control("POST", f"payment_intents/{processing[pick % len(processing)]}/settle",
                                {"outcome": outcome})
                FIGURES[f"bank debits {outcome}"] += 1

        def refundable_charges(self):
            return sorted((c for c in self.objects("charge") if c["status"] == "succeeded" and not c["disputed"]
                           and c["amount_refunded"] < c["amount"]), key=lambda c: c["id"])

        def refund(self, pick, share):
            charges = self.refundable_charges()
            if not charges:
                return
            charge = charges[pick % len(charges)]
            remaining = charge["amount"] - charge["amount_refunded"]
            params = {"charge": charge["id"]}
            if share is not None:  # a part: a quarter, a half or three quarters of what is left, at least a cent
                params["amount"] = max(1, remaining * share // 4)
            sandbox.client().v1.refunds.create(params=params)
            FIGURES["refunds (full)" if share is None else "refunds (part)"] += 1

        def dispute(self, pick):
            charges = [c for c in self.refundable_charges() if c["amount_refunded"] == 0]
            if charges:
                sandbox.control("POST", f"charges/{charges[pick % len(charges)]['id']}/dispute",
                                {"reason": "fraudulent"})
                FIGURES["disputes"] += 1

        def open_disputes(self):
            return sorted(d["id"] for d in self.objects("dispute") if d["status"] not in DECIDED)

        def decide_dispute(self, pick, outcome):
            disputes = self.open_disputes()
            if disputes:
                sandbox.control("POST", f"disputes/{disputes[pick % len(disputes)]}/close", {"outcome": outcome})
                FIGURES[f"disputes {outcome}"] += 1

        def partner_finishes_onboarding(self):
            partner = db.session.get(Partner, self.partners["onboarding"])
            account = sandbox.control("GET", "objects/account")["data"]
            mine = next(a for a in account if a["id"] == partner.stripe_account_id)
            db.session.commit()
            if not mine["details_submitted"]:
                sandbox.control("POST", f"accounts/{partner.stripe_account_id}/onboard")
                FIGURES["onboardings"] += 1

        # --- Rules: webhooks ------------------------------------------------------------------------------------

        @rule(pick=st.integers(0, 10**6), in_order=st.booleans())
        def deliver_an_event(self, pick, in_order):
            self.capture()
            if not self.pending:
                return
            event = self.pending.pop(0 if in_order else pick % len(self.pending))
            if not in_order:
                FIGURES["out-of-order deliveries"] += 1
            self.deliver_and_process(event)

        @rule(chaos=st.sampled_from(["duplicate", "two at once", "reorder"]), first=st.integers(0, 10**6),
              second=st.integers(0, 10**6), same=st.booleans(), seed=st.randoms(use_true_random=False))
        def delivery_chaos(self, chaos, first, second, same, seed):
            """Stripe delivers an event again, two at once (the same one, or two), or reorders what is pending."""
            if chaos == "duplicate":
                if self.delivered:
                    self.deliver_and_process(self.delivered[first % len(self.delivered)])
            elif chaos == "two at once":
                self.deliver_two_at_once(first, second, same)
            else:
                self.reorder_pending_events(seed)

        def reorder_pending_events(self, seed):
            self.capture()
            seed.shuffle(self.pending)
            FIGURES["reorderings"] += 1

        def deliver_two_at_once(self, first, second, same):
            self.capture()
            choices = self.pending + self.delivered
            if not choices:
                return
            events = [choices[first % len(choices)]]
            events.append(events[0] if same else choices[second % len(choices)])
            for event in events:
                if event in self.pending:
                    self.pending.remove(event)
                if event not in self.delivered:
                    self.delivered.append(event)
            db.session.commit()  # the main session holds no transaction while the two threads lock rows
            barrier, errors = threading.Barrier(2), []

            def deliver(event):
                with app.app_context():
                    try:
                        client = app.test_client()
                        barrier.wait(timeout=10)
                        row_id = self.deliver(event, client)
                        if row_id is not None:
                            run_as_rq("portal.payments.tasks.process_webhook_event", row_id)
                    except gateway.StripeUnavailable:  # noted on the event, which the worker's retry picks up
                        FIGURES["task failures"] += 1
                    except Exception as error:  # reported below: anything else must fail the step
                        errors.append(error)
                    finally:
                        db.session.remove()

            threads = [threading.Thread(target=deliver, args=(event,)) for event in events]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            FIGURES["concurrent pairs"] += 1
            assert not errors, errors


        # --- Rules: time, reconcile, payouts ----------------------------------------------------------------------

        def advance_the_clock(self, past):
            from portal.payments.services import sweep_overdue

            seconds = (DAYS_UNTIL_DUE + 1) * DAY if past == "due_date" else 25 * 3600
            clock.offset = sandbox.control("POST", "clock/advance", {"seconds": seconds})["offset_seconds"]
            FIGURES[f"clock advances past {past.replace('_', ' ')}"] += 1
            if past == "due_date":
                sweep_overdue()

        @rule(task=st.sampled_from(["reconcile", "payouts", "payouts", "retry failed billing", "retry failed payouts",
                                    "retry stored events", "partner onboards", "past the due date",
                                    "past 24 hours"]),
              pick=st.integers(0, 10**6), fault=st.sampled_from([None, None, "500", "429", "reset", "hang", "kill"]))
        def back_office(self, task, pick, fault):
            """Time passing (past due dates, or past 24 h so Stripe forgets idempotency keys), scheduled work
            (reconcile, payout releases and transfers), people's retries, and a partner finishing onboarding."""
            if task.startswith("past"):
                self.advance_the_clock("due_date" if task == "past the due date" else "idempotency_keys")
            elif task == "reconcile":
                self.run_reconciliation()
            elif task == "payouts":
                self.run_payout_transfers(pick, fault)
            elif task == "retry failed billing":
                self.office_retries_failed_billing()
            elif task == "retry failed payouts":
                self.office_retries_failed_payouts()
            elif task == "retry stored events":
                self.process_received()
            else:
                self.partner_finishes_onboarding()

        def run_reconciliation(self):
            run_as_rq("portal.payments.tasks.reconcile_with_stripe")
            FIGURES["reconcile runs"] += 1

        def pending_payout_ids(self):
            return db.session.scalars(select(Payout.id).where(Payout.status == PayoutStatus.PENDING)
                                      .order_by(Payout.id)).all()

        def run_payout_transfers(self, pick, fault):
            run_as_rq("portal.referrals.tasks.release_due_payouts")
            pending = self.pending_payout_ids()
            db.session.commit()
            if not pending:
                return
            payout_id = pending[pick % len(pending)]
            if fault is None:
                self.run_task("payout", payout_id, "portal.referrals.tasks.transfer_payout")
            elif fault == "kill":
                real = gateway.create_transfer

                def then_die(**kwargs):
                    real(**kwargs)
                    raise WorkerKilled("transfer")

                try:
                    with mock.patch.object(gateway, "create_transfer", then_die):
                        self.run_task("payout", payout_id, "portal.referrals.tasks.transfer_payout")
                except WorkerKilled:
                    FIGURES["kills"] += 1
                    db.session.rollback()
            else:
                with self.fault("POST", r"^/v1/transfers$", fault):
                    self.run_task("payout", payout_id, "portal.referrals.tasks.transfer_payout")

        def office_retries_failed_payouts(self):
            from portal.referrals.settlement import retry_failed_payouts

            for payout in retry_failed_payouts(by=OFFICE):
                self.retries[("payout", payout.id)] = RETRIES
                FIGURES["office retries"] += 1
            db.session.commit()

        @precondition(lambda self: len(self.job_ids) > 3)
        @rule()
        def quiet_point(self):
            self.settle_everything_and_compare()

        # --- Invariants after every step ---------------------------------------------------------------------------

        @invariant()
        def at_most_one_live_bill_per_job(self):
            FIGURES["invariant checks"] += 1
            db.session.rollback()
            doubled = db.session.execute(select(BillingRecord.job_id, func.count()).where(BillingRecord.live)
                                         .group_by(BillingRecord.job_id).having(func.count() > 1)).all()
            assert doubled == []
            invoices = Counter(i["metadata"].get("job_id") for i in self.objects("invoice") if i["status"] != "void")
            links = Counter(link["metadata"].get("job_id") for link in self.objects("payment_link") if link["active"])
            assert [job for job, n in (invoices + links).items() if n > 1] == []
            db.session.commit()

        @invariant()
        def at_most_one_transfer_per_payout(self):
            transfers = Counter(t["metadata"].get("payout_id") for t in self.objects("transfer"))
            assert [payout for payout, n in transfers.items() if n > 1] == []

        @invariant()
        def billing_status_only_moves_forward(self):
            rows = db.session.execute(select(BillingRecord.id, BillingRecord.status, BillingRecord.live,
                                             BillingRecord.dispute_closed_at, Job.billing_status)
                                      .join(Job, Job.id == BillingRecord.job_id)).all()
            db.session.commit()
            for record_id, status, live, dispute_closed_at, job_status in rows:
                seen = self.history.setdefault(record_id, [status])
                assert may_follow(seen[-1], status, dispute_decided=dispute_closed_at is not None), (
                    f"record {record_id}: {' → '.join(seen)} → {status}")
                if seen[-1] != status:
                    seen.append(status)
                if live:
                    assert job_status == status, f"record {record_id} is {status}, its job says {job_status}"

        @invariant()
        def at_most_one_bill_email_per_trigger(self):
            claims = db.session.execute(
                select(BillingRecord.trigger_id, func.count()).join(CustomerEmail.record)
                .where(CustomerEmail.kind == EmailKind.BILL).group_by(BillingRecord.trigger_id)
                .having(func.count() > 1)).all()
            db.session.commit()
            assert claims == []
            assert [job for job, n in bills_in_inbox(smtp).items() if n > 1] == []

        @invariant()
        def the_ledger_balances(self):
            paid = self.paid_by_job()
            transfers = {t["id"]: t for t in self.objects("transfer")}
            for payout in db.session.scalars(select(Payout)).all():
                assert payout.amount_paid == paid.get(payout.job_id), f"payout {payout.id}: paid differs from Stripe"
                # No sales tax in tests, so the pre-tax share of what was paid is all of it.
                assert payout.fee_base_amount == payout.amount_paid
                assert 0 <= payout.amount <= payout.amount_paid
                assert 0 <= payout.amount_reversed <= payout.amount
                if payout.stripe_transfer_id:
                    transfer = transfers[payout.stripe_transfer_id]
                    assert transfer["metadata"]["payout_id"] == str(payout.id)
                    assert transfer["amount"] - transfer["amount_reversed"] == payout.amount - payout.amount_reversed
            db.session.commit()

        def paid_by_job(self):
            """What the sandbox says each job's customer paid (job id → amount)."""
            paid = {}
            for invoice in self.objects("invoice"):
                if invoice["status"] == "paid":
                    paid[int(invoice["metadata"]["job_id"])] = invoice["amount_paid"]
            for session in self.objects("checkout.session"):
                if session["payment_status"] == "paid":
                    job_id = int(session["metadata"]["job_id"])
                    paid[job_id] = paid.get(job_id, 0) + session["amount_total"]
            return paid

        # --- The quiet point: everything delivered, reconciled and settled; then ours equals Stripe's --------------

        def settle_everything_and_compare(self, final=False):
            sandbox.control("DELETE", "faults")
            db.session.rollback()
            for _ in range(6):
                self.finish_billing()
                self.capture()
                while self.pending:
                    self.deliver_and_process(self.pending.pop(0))
                self.process_received()
                run_as_rq("portal.payments.tasks.reconcile_with_stripe")
                self.finish_payouts()
                self.capture()
                quiet = not self.pending and not self.pending_trigger_ids() and not self.pending_payout_ids()
                db.session.commit()
                if quiet:
                    break
            else:
                pytest.fail("the system did not come to rest after six rounds")
            FIGURES["quiet points"] += 1
            self.compare_with_stripe()
            if final:
                transfers = self.objects("transfer")
                FIGURES["transfers at Stripe"] += len(transfers)
                FIGURES["transfer reversals at Stripe"] += len(self.objects("transfer_reversal"))
                FIGURES["payouts"] += db.session.scalar(select(func.count()).select_from(Payout))
                FIGURES["invoices and payment links at Stripe"] += (len(self.objects("invoice"))
                                                                    + len(self.objects("payment_link")))
                FIGURES["bill emails received"] += sum(bills_in_inbox(smtp).values())
                db.session.commit()

        def finish_billing(self):
            from portal.billing.services import retry_trigger

            for _ in range(RETRIES + 2):
                for trigger_id in self.pending_trigger_ids():
                    self.run_trigger(trigger_id)
                failed = db.session.scalars(select(BillingTrigger).where(BillingTrigger.status == TriggerStatus.FAILED)
                                            ).all()
                for trigger in failed:
                    retry_trigger(trigger, by=OFFICE)
                    self.retries[("trigger", trigger.id)] = RETRIES
                db.session.commit()
                if not self.pending_trigger_ids():
                    return

        def finish_payouts(self):
            from portal.referrals.settlement import retry_failed_payouts

            run_as_rq("portal.referrals.tasks.release_due_payouts")
            for payout in retry_failed_payouts(by=OFFICE):
                self.retries[("payout", payout.id)] = RETRIES
            db.session.commit()
            for payout_id in self.pending_payout_ids():
                self.run_task("payout", payout_id, "portal.referrals.tasks.transfer_payout")

        def compare_with_stripe(self):
            now = sandbox.control("GET", "clock")["now"]
            invoices = {i["metadata"]["job_id"]: i for i in self.objects("invoice")}
            links = {link["metadata"]["job_id"]: link for link in self.objects("payment_link")}
            sessions = self.objects("checkout.session")
            intents = {i["id"]: i for i in self.objects("payment_intent")}
            charges = {c["id"]: c for c in self.objects("charge")}
            for dispute in self.objects("dispute"):
                charges[dispute["charge"]]["dispute_status"] = dispute["status"]
            invoice_intents = {p["invoice"]: p["payment"]["payment_intent"] for p in self.objects("invoice_payment")}
            transfers = {t["metadata"]["payout_id"]: t for t in self.objects("transfer")}
            paid = self.paid_by_job()
            inbox = bills_in_inbox(smtp)
            for job_id in self.job_ids:
                job = db.session.get(Job, job_id)
                record_ = job.live_billing_record
                assert record_ is not None, f"job {job.number} was left unbilled"
                assert [t.status for t in job.billing_triggers] == [TriggerStatus.DONE]
                key = str(job_id)
                if record_.kind.value == "invoice":
                    invoice = invoices[key]
                    assert record_.stripe_invoice_id == invoice["id"] and invoice["total"] == record_.total
                    intent = intents.get(invoice_intents.get(invoice["id"]))
                    charge = charges.get(intent and intent["latest_charge"])
                    expected = self.expected_invoice_status(invoice, intent, charge, now)
                else:
                    link = links[key]
                    assert record_.stripe_payment_link_id == link["id"]
                    # The sandbox lists newest first; its order, not `created` (whole seconds), tells which was last.
                    own = [s for s in reversed(sessions) if s["payment_link"] == link["id"]]
                    expected = self.expected_link_status(own, intents, charges)
                assert record_.status in expected, f"job {job.number}: {record_.status}, Stripe says {expected}"
                assert record_.amount_paid == paid.get(job_id, 0), f"job {job.number}: amount paid"
                charge = self.paid_charge(record_, invoices, intents, invoice_intents, sessions, charges)
                assert record_.amount_refunded == (charge["amount_refunded"] if charge else 0)
                emails_sent = db.session.scalar(select(func.count()).select_from(CustomerEmail).where(
                    CustomerEmail.record_id == record_.id, CustomerEmail.kind == EmailKind.BILL))
                assert emails_sent <= 1 and inbox[job.number] <= 1
                self.compare_payout(job, record_, charge, transfers, paid.get(job_id, 0))
                FIGURES["jobs compared with Stripe"] += 1
            db.session.commit()

        def paid_charge(self, record_, invoices, intents, invoice_intents, sessions, charges):
            """The charge that paid the bill, or None."""
            if record_.stripe_invoice_id:
                intent = intents.get(invoice_intents.get(record_.stripe_invoice_id))
                charge = charges.get(intent and intent["latest_charge"])
                return charge if charge and charge["status"] == "succeeded" else None
            for session in sessions:
                if session["payment_link"] == record_.stripe_payment_link_id and session["payment_status"] == "paid":
                    return charges[intents[session["payment_intent"]]["latest_charge"]]
            return None

        @staticmethod
        def after_payment(charge):
            if charge["amount_refunded"] == charge["amount"]:
                return {S.REFUNDED}
            if charge["amount_refunded"]:
                return {S.PARTIALLY_REFUNDED}
            return {S.DISPUTED} if charge["disputed"] and charge.get("dispute_status") not in WON else {S.PAID}

        def expected_invoice_status(self, invoice, intent, charge, now):
            if invoice["status"] == "paid":
                return self.after_payment(charge)
            assert invoice["status"] == "open", invoice["status"]
            if intent is None:
                current = S.SENT
            elif intent["status"] == "processing":
                current = S.PROCESSING
            else:
                current = S.PAYMENT_FAILED
            past_due = invoice["due_date"] is not None and invoice["due_date"] < now
            return {current, S.OVERDUE} if past_due else {current}

        def expected_link_status(self, sessions, intents, charges):
            for session in sessions:
                if session["payment_status"] == "paid":
                    return self.after_payment(charges[intents[session["payment_intent"]]["latest_charge"]])
            if not sessions:
                return {S.SENT}
            latest = intents[sessions[-1]["payment_intent"]]
            return {S.PROCESSING} if latest["status"] == "processing" else {S.PAYMENT_FAILED}

        def compare_payout(self, job, record_, charge, transfers, paid):
            payouts = db.session.scalars(select(Payout).where(Payout.job_id == job.id)).all()
            referral = record_.referral
            if referral is None or not paid:
                assert payouts == [], f"job {job.number}: a payout with nothing earned"
                return
            (payout,) = payouts
            partner = referral.partner
            fee = half_up(paid * partner.fee_basis_points, 10_000)
            assert (payout.amount_paid, payout.amount) == (paid, fee)
            refunded = charge["amount_refunded"]
            full_refund = refunded == charge["amount"]
            transfer = transfers.get(str(payout.id))
            assert (transfer["id"] if transfer else None) == payout.stripe_transfer_id
            # Reversed when the dispute opened (reverse policy, whatever the bank decides later), or when it was lost.
            reverse_all = full_refund or charge.get("dispute_status") == "lost" or (
                charge["disputed"] and partner.dispute_policy == DisputePolicy.REVERSE)
            if reverse_all:
                assert payout.amount_reversed == fee
                assert payout.status == (PayoutStatus.REVERSED if transfer else PayoutStatus.CANCELLED)
            else:
                assert payout.amount_reversed == min(fee, half_up(fee * refunded, paid))
                owed = fee - payout.amount_reversed
                if not owed:
                    # Nothing left to send (a fee of nothing on a cent or two, or refunded away): reversed after its
                    # transfer; before one, "paid" with no transfer, cancelled, or still held: money-wise the same.
                    assert payout.status in ({PayoutStatus.REVERSED} if transfer else
                                             {PayoutStatus.PAID, PayoutStatus.CANCELLED, PayoutStatus.HELD,
                                              PayoutStatus.HELD_NO_ACCOUNT})
                    assert not transfer or transfer["amount"] == transfer["amount_reversed"]
                elif charge["disputed"] and charge.get("dispute_status") not in DECIDED and not transfer:
                    assert payout.status == PayoutStatus.HELD
                elif partner.account_status != AccountStatus.READY:
                    assert payout.status == PayoutStatus.HELD_NO_ACCOUNT
                else:
                    assert payout.status == PayoutStatus.PAID
                    assert transfer["amount"] - transfer["amount_reversed"] == owed

    run_state_machine_as_test(MoneyFlow, settings=settings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
    FIGURES["seconds"] = round(time.monotonic() - started)
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps(dict(sorted(FIGURES.items())), indent=2) + "\n")
    print(json.dumps(dict(sorted(FIGURES.items())), indent=2))


def test_a_trigger_resumed_after_the_customer_paid_leaves_the_bill_paid_and_emails_nothing(money_flow):
    """The machine's first find: killed after Stripe sent the invoice, resumed after the customer paid it.

    Before the fix the resumed trigger moved the paid record back to "sent" and emailed a bill for it.
    """
    app, sandbox, smtp, _ = money_flow
    from portal.jobs.services import complete_job

    app.config["STRIPE_WEBHOOK_SECRET"] = secret = "whsec_model_test"
    client_row = factories.client(billing_mode="invoice", send_mode="auto", days_until_due=DAYS_UNTIL_DUE)
    job = factories.job(client_row, items=[("Labor", "2", 8500)])
    complete_job(job, by=OFFICE)
    db.session.commit()
    trigger_id, job_id = job.billing_triggers[-1].id, job.id
    real_send = gateway.send_invoice

    def send_then_die(*args, **kwargs):
        real_send(*args, **kwargs)
        raise WorkerKilled("send")

    with mock.patch.object(gateway, "send_invoice", send_then_die), pytest.raises(WorkerKilled):
        run_as_rq("portal.billing.tasks.process_billing_trigger", trigger_id)
    db.session.rollback()
    db.session.execute(update(BillingTrigger).where(BillingTrigger.id == trigger_id).values(lease_until=None))
    db.session.commit()
    (invoice,) = sandbox.control("GET", "objects/invoice")["data"]
    sandbox.control("POST", f"invoices/{invoice['id']}/pay", {"outcome": "card"})  # from Stripe's own email
    client = app.test_client()
    for event in reversed(sandbox.control("GET", "objects/event")["data"]):
        if event["type"] in HANDLED_EVENTS and not post_event(client, secret, event)["duplicate"]:
            row_id = db.session.scalar(select(WebhookEvent.id).where(WebhookEvent.stripe_event_id == event["id"]))
            run_as_rq("portal.payments.tasks.process_webhook_event", row_id)
    assert db.session.get(Job, job_id).billing_status == S.PAID

    run_as_rq("portal.billing.tasks.process_billing_trigger", trigger_id)  # the sweeper's retry

    db.session.expire_all()
    job = db.session.get(Job, job_id)
    assert job.billing_status == S.PAID and job.live_billing_record.status == S.PAID
    assert job.live_billing_record.amount_paid == 17000
    assert job.billing_triggers[-1].status == TriggerStatus.DONE
    assert smtp.messages == []  # the customer paid already: no bill from us
