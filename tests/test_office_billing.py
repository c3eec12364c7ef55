"""Office billing screens: the job page's billing component, Needs attention and Ready to bill.

Bills are made at the Stripe sandbox by the pipeline's own steps, run in the test process instead
of a worker (the worker path is tested in test_closeout_to_cash.py). Emails are asserted as the
task queued on this run's Redis.
"""
import html
import re
from datetime import datetime, timedelta, timezone

import pytest

from portal.audit.models import AuditEntry
from portal.billing import pipeline
from portal.billing.models import (BillingBatch, BillingRecord, BillingStatus, BillingTrigger, CustomerEmail,
                                   EmailKind, TriggerStatus)
from portal.billing.services import PROCESS_BATCH, PROCESS_TRIGGER, RESEND_BILL_EMAIL, SEND_BILL_EMAIL, bill_now
from portal.billing.stripe_gateway import StripeRefused
from portal.extensions import db as _db
from portal.jobs.models import Job
from portal.jobs.services import complete_job
from portal.queue import get_queue
from tests import factories

OFFICE_LABEL = "Olive Office (office)"


@pytest.fixture
def stripe(app, stripe_sandbox):
    """The app billing through the Stripe sandbox, with an empty queue so a test sees only what it enqueued."""
    saved = {key: app.config.get(key) for key in ("STRIPE_API_BASE", "STRIPE_SECRET_KEY")}
    app.config.update(STRIPE_API_BASE=stripe_sandbox.url, STRIPE_SECRET_KEY=stripe_sandbox.api_key)
    app.extensions.pop("closeout_stripe", None)
    get_queue().empty()
    yield stripe_sandbox.client()
    stripe_sandbox.control("DELETE", "faults")
    app.config.update(saved)
    app.extensions.pop("closeout_stripe", None)
    get_queue().empty()


def completed_job(client_row, items=(("Labor", "2", 8500),)):
    """A job the crew finished: its billing trigger is pending, as closeout leaves it."""
    job = factories.job(client_row, items=items)
    complete_job(job, by=factories.system())
    _db.session.commit()
    return job


def waiting_for_batch(client_row, items=(("Labor", "2", 8500),)):
    """A completed job of a batched client once the worker has stored its proof: ready to bill."""
    job = completed_job(client_row, items)
    pipeline.finish(job.billing_triggers[-1])
    return job


def billed_job(client_row, items=(("Labor", "2", 8500),)):
    """A completed job billed at the sandbox by the pipeline's steps: a draft, a sent invoice, or a link."""
    job = completed_job(client_row, items)
    trigger = job.billing_triggers[-1]
    pipeline.bill(pipeline.open_record(trigger))
    pipeline.finish(trigger)
    get_queue().empty()  # the completion's own task; the worker is not under test here
    return job


def failed_job(client_row, error="Stripe refused: The email address is invalid."):
    """A completed job whose billing trigger failed for good after one attempt."""
    job = completed_job(client_row)
    trigger = pipeline.claim(BillingTrigger, job.billing_triggers[-1].id)
    pipeline.note_failure(trigger, StripeRefused(error), final=True)
    get_queue().empty()
    return job


def act(browser, job, action, data=None):
    """A button in the billing component, as htmx sends it."""
    return browser.htmx("POST", f"/office/jobs/{job.id}/billing/{action}", data, headers={"HX-Target": "billing"})


def component(response):
    body = response.get_data(as_text=True)
    assert response.status_code == 200, body[:500]
    assert body.lstrip().startswith('<section id="billing"'), body[:200]
    return html.unescape(body)


def refresh(job):
    _db.session.expire_all()
    return _db.session.get(Job, job.id)


def queued(name):
    """The argument tuples of the tasks with this dotted name waiting on this run's queue."""
    return [task.args for task in get_queue().jobs if task.func_name == name]


def trail(browser, job):
    """(action, who) pairs of the job page's history, as the office reads it."""
    page = browser.get(f"/office/jobs/{job.id}").get_data(as_text=True)
    section = page.split('id="trail"', 1)[1]
    pattern = re.compile(r"<strong>([\w.]+)</strong>.*?<div class=\"small\">(.*?) <span", re.S)
    return [(action, html.unescape(who)) for action, who in pattern.findall(section)]


def audit_count(action):
    return _db.session.query(AuditEntry).filter_by(action=action).count()


# --- Draft review: Approve & send ---------------------------------------------------------------------

def test_approve_and_send_finalizes_the_draft_and_queues_the_email(db, login, office, stripe):
    client_row = factories.client(name="Acme Rentals", billing_mode="invoice", send_mode="draft",
                                  billing_emails=["ap@acme.test"])
    job = billed_job(client_row)
    browser = login(office)

    page = html.unescape(browser.get(f"/office/jobs/{job.id}").get_data(as_text=True))
    assert "Draft invoice: review" in page and "Approve & send" in page and "ap@acme.test" in page
    assert 'id="billing"' in page and "hx-trigger=\"every" not in page  # nothing pending: no polling

    body = component(act(browser, job, "approve"))
    assert "Invoice approved and sent" in body and ">Sent<" in body
    bill = refresh(job).live_billing_record
    assert bill.status == BillingStatus.SENT and job.billing_status == BillingStatus.SENT
    invoice = stripe.v1.invoices.retrieve(bill.stripe_invoice_id)
    assert invoice.status == "open" and invoice.total == 17000
    assert bill.invoice_number == invoice.number and bill.invoice_number in body
    assert "$170.00" in body and "Open invoice page" in body and invoice.hosted_invoice_url in body
    assert "Approve & send" not in body and "Resend email" in body
    assert queued(SEND_BILL_EMAIL) == [(bill.id,)]
    assert ("billing.draft_approved", OFFICE_LABEL) in trail(browser, job)

    # The worker's email shows once it is recorded: when, and to whom.
    assert "No email recorded for this bill yet." in body
    _db.session.add(CustomerEmail(record=bill, kind=EmailKind.BILL, recipients="ap@acme.test",
                                  subject=f"Invoice for job {job.number}", message_id="<bill-1@closeout.test>",
                                  sent_at=datetime(2026, 11, 27, 15, 5, tzinfo=timezone.utc),
                                  created_by="billing worker"))
    _db.session.commit()
    body = component(browser.htmx("GET", f"/office/jobs/{job.id}/billing"))
    assert re.search(r"Bill email</strong>\s+sent Fri Nov 27, 2026 03:05 PM\s+to ap@acme.test", body)
    assert "by billing worker" in body and "No email recorded" not in body

    # The same button from a stale tab: refused, with the reason, and nothing sent twice.
    body = component(act(browser, job, "approve"))
    assert "Only a draft invoice can be approved." in body
    assert queued(SEND_BILL_EMAIL) == [(bill.id,)] and audit_count("billing.draft_approved") == 1


# --- Void & re-bill -----------------------------------------------------------------------------------

def test_void_then_edit_then_rebill_an_invoice(db, login, office, stripe):
    client_row = factories.client(billing_mode="invoice", send_mode="auto")
    job = billed_job(client_row)
    bill = job.live_billing_record
    browser = login(office)
    assert "Void & re-bill" in component(browser.htmx("GET", f"/office/jobs/{job.id}/billing"))

    body = component(act(browser, job, "void", {"reason": "  "}))
    assert "Say why the bill is voided." in body
    assert refresh(job).live_billing_record.id == bill.id
    assert stripe.v1.invoices.retrieve(bill.stripe_invoice_id).status == "open"

    body = component(act(browser, job, "void", {"reason": "Priced the wrong faucet"}))
    assert "Bill voided" in body and "Re-bill $170.00" in body and "Reason: Priced the wrong faucet" in body
    assert stripe.v1.invoices.retrieve(bill.stripe_invoice_id).status == "void"
    job = refresh(job)
    closed = db.session.get(BillingRecord, bill.id)
    assert not closed.live and closed.status == BillingStatus.VOID and closed.closed_reason == "Priced the wrong faucet"
    assert job.live_billing_record is None and job.billing_status == BillingStatus.NOT_BILLED

    # With the bill voided the items can change again; the next bill carries the new price.
    item = job.line_items[0]
    response = browser.post_form(f"/office/jobs/{job.id}/items/{item.id}",
                                 {"description": "Labor", "quantity": "2", "unit_amount": "95.00"})
    assert response.status_code == 302

    body = component(act(browser, job, "rebill"))
    assert "Billing again" in body and "Billing pending… 0 attempts so far." in body
    assert f'hx-get="/office/jobs/{job.id}/billing"' in body and 'hx-trigger="every 3s"' in body
    job = refresh(job)
    trigger = job.billing_triggers[-1]
    assert len(job.billing_triggers) == 2 and trigger.status == TriggerStatus.PENDING
    assert job.billing_status == BillingStatus.PENDING
    assert queued(PROCESS_TRIGGER) == [(trigger.id,)]

    # The worker bills it; the next poll shows the new bill and stops polling.
    new_bill = pipeline.open_record(trigger)
    pipeline.bill_by_invoice(pipeline.InvoiceIntent.for_record(new_bill))
    pipeline.finish(trigger)
    body = component(browser.htmx("GET", f"/office/jobs/{job.id}/billing"))
    assert "hx-trigger" not in body and "$190.00" in body and ">Sent<" in body
    assert stripe.v1.invoices.retrieve(new_bill.stripe_invoice_id).total == 19000

    history = trail(browser, job)
    assert ("billing.record_closed", OFFICE_LABEL) in history
    assert ("billing.rebill_requested", OFFICE_LABEL) in history


def test_void_deactivates_a_payment_link(db, login, office, stripe):
    job = billed_job(factories.client(billing_mode="payment_link", send_mode="auto"))
    bill = job.live_billing_record
    assert stripe.v1.payment_links.retrieve(bill.stripe_payment_link_id).active is True

    body = component(act(login(office), job, "void", {"reason": "Customer wants an invoice instead"}))
    assert "Bill voided" in body
    assert stripe.v1.payment_links.retrieve(bill.stripe_payment_link_id).active is False
    closed = db.session.get(BillingRecord, bill.id)
    assert not closed.live and closed.closed_reason == "Customer wants an invoice instead"


# --- Paid offline, no charge, resend ---------------------------------------------------------------------

def test_a_referred_job_paid_offline_still_earns_its_partner_fee(db, login, office, stripe):
    from portal.referrals.models import Payout, PayoutStatus
    from tests.fixtures.referrals import partner_row, referral_row

    client_row = factories.client(billing_mode="invoice", send_mode="auto")
    partner = partner_row(basis_points=1000)  # 10 % of the subtotal, no connected account yet
    referral_row(partner, client=client_row)
    job = billed_job(client_row)

    login(office).post_form(f"/office/jobs/{job.id}/billing/paid-offline", {"method": "cash"})

    payout = db.session.query(Payout).one()
    assert (payout.job_id, payout.partner_id, payout.amount_paid, payout.amount) == (job.id, partner.id, 17000, 1700)
    assert payout.status == PayoutStatus.HELD_NO_ACCOUNT and payout.source_charge_id is None


def test_mark_paid_offline_then_void_is_refused(db, login, office, stripe):
    job = billed_job(factories.client(billing_mode="invoice", send_mode="auto"))
    bill = job.live_billing_record
    browser = login(office)

    # A plain form (no JavaScript): back to the job page, with what happened.
    response = browser.post_form(f"/office/jobs/{job.id}/billing/paid-offline",
                                 {"method": "check", "note": "Check #1042"})
    assert response.status_code == 303 and response.headers["Location"].endswith(f"/office/jobs/{job.id}#billing")
    page = html.unescape(browser.get(f"/office/jobs/{job.id}").get_data(as_text=True))
    assert "Marked paid offline (check)." in page and ">Paid<" in page
    assert "Void & re-bill" not in page and "Resend email" not in page and "Mark paid offline" not in page
    invoice = stripe.v1.invoices.retrieve(bill.stripe_invoice_id)
    assert invoice.status == "paid" and invoice.amount_paid == 17000
    # Out of band: Stripe shows it paid with no card or bank payment behind it.
    payments = stripe.v1.invoice_payments.list(params={"invoice": invoice.id}).data
    assert [payment.status for payment in payments if payment.status == "paid"] == []
    job = refresh(job)
    assert job.billing_status == BillingStatus.PAID and job.live_billing_record.amount_paid == 17000
    entry = db.session.query(AuditEntry).filter_by(action="billing.paid_offline").one()
    assert entry.detail["method"] == "check" and entry.detail["note"] == "Check #1042"
    assert entry.actor_label == OFFICE_LABEL

    # Voiding a paid bill is refused: as htmx inside the component, as a plain form with a 409.
    body = component(act(browser, job, "void", {"reason": "Oops"}))
    assert "Money has moved on this bill; refund it in Stripe instead of voiding." in body
    response = browser.post_form(f"/office/jobs/{job.id}/billing/void", {"reason": "Oops"})
    assert response.status_code == 409 and "Money has moved on this bill" in response.get_data(as_text=True)
    job = refresh(job)
    assert job.live_billing_record.id == bill.id and job.billing_status == BillingStatus.PAID
    assert stripe.v1.invoices.retrieve(bill.stripe_invoice_id).status == "paid"


def test_no_charge_needs_a_reason_and_voids_the_open_invoice(db, login, office, stripe):
    job = billed_job(factories.client(billing_mode="invoice", send_mode="auto"))
    bill = job.live_billing_record
    browser = login(office)

    body = component(act(browser, job, "no-charge", {"reason": ""}))
    assert "Say why there is no charge." in body
    assert refresh(job).billing_status == BillingStatus.SENT

    body = component(act(browser, job, "no-charge", {"reason": "Warranty callback"}))
    assert "Marked no charge." in body and "No charge: Warranty callback" in body
    assert "Re-bill" not in body and "No charge…" not in body
    job = refresh(job)
    assert job.billing_status == BillingStatus.NO_CHARGE and job.no_charge_reason == "Warranty callback"
    assert job.live_billing_record is None
    assert stripe.v1.invoices.retrieve(bill.stripe_invoice_id).status == "void"
    assert ("billing.no_charge", OFFICE_LABEL) in trail(browser, job)


def test_resend_queues_the_email_and_is_refused_for_a_draft(db, login, office, stripe):
    sent = billed_job(factories.client(billing_mode="invoice", send_mode="auto"))
    draft = billed_job(factories.client(billing_mode="invoice", send_mode="draft"))
    browser = login(office)

    body = component(act(browser, draft, "resend"))
    assert "Only a sent, unpaid bill can be emailed again." in body and queued(RESEND_BILL_EMAIL) == []

    body = component(act(browser, sent, "resend"))
    assert "The bill email is being sent again." in body
    assert queued(RESEND_BILL_EMAIL) == [(sent.live_billing_record.id, OFFICE_LABEL)]
    assert ("email.resend_requested", OFFICE_LABEL) in trail(browser, sent)


def test_actions_on_a_job_without_a_bill_are_refused_not_hidden(db, login, office, stripe):
    job = factories.job(items=[("Labor", "1", 8500)])
    browser = login(office)
    for action, data in [("approve", None), ("resend", None), ("void", {"reason": "x"}),
                         ("paid-offline", {"method": "cash"})]:
        body = component(act(browser, job, action, data))
        assert "This job has no open bill any more" in body, action
    assert "Complete the job before billing it." in component(act(browser, job, "rebill"))
    assert "nothing to retry" in component(act(browser, job, "retry"))
    assert refresh(job).billing_status == BillingStatus.NOT_BILLED and not job.billing_triggers


# --- Stripe outages during an action ------------------------------------------------------------------

@pytest.mark.parametrize("action, data, send_mode, step, after", [
    ("approve", None, "draft", "finalize", BillingStatus.SENT),
    ("void", {"reason": "Wrong client"}, "auto", "void", BillingStatus.NOT_BILLED),
    ("paid-offline", {"method": "cash"}, "auto", "pay", BillingStatus.PAID),
])
def test_a_stripe_outage_shows_a_message_and_changes_nothing(db, login, office, stripe, stripe_sandbox,
                                                             action, data, send_mode, step, after):
    job = billed_job(factories.client(billing_mode="invoice", send_mode=send_mode))
    bill = job.live_billing_record
    before = bill.status
    stripe_status = stripe.v1.invoices.retrieve(bill.stripe_invoice_id).status
    entries = _db.session.query(AuditEntry).count()
    stripe_sandbox.control("POST", "faults", {"method": "POST", "mode": "500", "count": 1,
                                              "path": f"/v1/invoices/{bill.stripe_invoice_id}/{step}"})
    browser = login(office)

    body = component(act(browser, job, action, data))
    assert "Stripe could not be reached" in body and "nothing was changed" in body
    job = refresh(job)
    assert job.live_billing_record.id == bill.id and job.billing_status == bill.status == before
    assert stripe.v1.invoices.retrieve(bill.stripe_invoice_id).status == stripe_status
    assert _db.session.query(AuditEntry).count() == entries
    assert queued(SEND_BILL_EMAIL) == []

    # Stripe is back: the same button works.
    body = component(act(browser, job, action, data))
    assert "Stripe could not be reached" not in body and refresh(job).billing_status == after


def test_a_stripe_outage_on_a_plain_form_answers_502(db, login, office, stripe, stripe_sandbox):
    job = billed_job(factories.client(billing_mode="invoice", send_mode="auto"))
    bill = job.live_billing_record
    stripe_sandbox.control("POST", "faults", {"method": "POST", "mode": "500", "count": 1,
                                              "path": f"/v1/invoices/{bill.stripe_invoice_id}/void"})
    response = login(office).post_form(f"/office/jobs/{job.id}/billing/void", {"reason": "Wrong client"})
    assert response.status_code == 502 and "Stripe could not be reached" in response.get_data(as_text=True)
    assert refresh(job).live_billing_record.id == bill.id


# --- Billing failed: the component, Needs attention, Retry now --------------------------------------------

def test_a_failed_trigger_is_listed_and_retry_now_queues_it_again(db, login, office, stripe):
    client_row = factories.client(name="Harbor View", billing_mode="invoice", send_mode="auto")
    job = failed_job(client_row, "Stripe refused: The email address is invalid.")
    trigger = job.billing_triggers[-1]
    healthy = billed_job(client_row)
    browser = login(office)

    body = component(browser.htmx("GET", f"/office/jobs/{job.id}/billing"))
    assert "Billing failed: Stripe refused: The email address is invalid." in body
    assert "1 attempt" in body and "Retry now" in body and "hx-trigger" not in body

    page = html.unescape(browser.get("/office/billing/attention").get_data(as_text=True))
    assert "Billing failed (1)" in page and job.number in page and "Harbor View" in page
    assert "The email address is invalid." in page and "1 attempt" in page and "Retry now" in page
    assert healthy.number not in page

    response = browser.post_form(f"/office/jobs/{job.id}/billing/retry", {"back": "attention"})
    assert response.status_code == 303 and response.headers["Location"].endswith("/office/billing/attention")
    page = html.unescape(browser.get("/office/billing/attention").get_data(as_text=True))
    assert f"Billing {job.number} again" in page and "Nothing needs attention" in page
    trigger = db.session.get(BillingTrigger, trigger.id)
    db.session.refresh(trigger)
    assert trigger.status == TriggerStatus.PENDING and trigger.attempts == 0
    assert refresh(job).billing_status == BillingStatus.PENDING
    assert queued(PROCESS_TRIGGER) == [(trigger.id,)]
    assert ("billing.retry_requested", OFFICE_LABEL) in trail(browser, job)

    # Pending again, the component polls; a second retry is refused.
    body = component(act(browser, job, "retry"))
    assert "nothing to retry" in body and 'hx-trigger="every 3s"' in body
    assert queued(PROCESS_TRIGGER) == [(trigger.id,)]


def test_a_failure_settled_another_way_leaves_needs_attention(db, login, office, stripe):
    job = failed_job(factories.client(billing_mode="invoice", send_mode="auto"))
    browser = login(office)
    body = component(act(browser, job, "no-charge", {"reason": "Goodwill: customer was double-booked"}))
    assert "Marked no charge." in body and "Retry now" not in body
    assert "Nothing needs attention" in browser.get("/office/billing/attention").get_data(as_text=True)
    assert "nothing to retry" in component(act(browser, job, "retry"))
    assert refresh(job).billing_status == BillingStatus.NO_CHARGE and queued(PROCESS_TRIGGER) == []


def test_needs_attention_lists_billing_stuck_pending(db, login, office):
    job = completed_job(factories.client(name="Slow Co"))
    job.billing_triggers[-1].created_at -= timedelta(minutes=20)
    db.session.commit()
    page = html.unescape(login(office).get("/office/billing/attention").get_data(as_text=True))
    assert "Stuck: pending for more than 15 minutes (1)" in page and job.number in page and "Slow Co" in page


# --- Ready to bill and "Bill now" ---------------------------------------------------------------------------

def test_bill_now_opens_one_batch_per_client_for_the_chosen_jobs(db, login, office):
    acme = factories.client(name="Acme Rentals", batching="weekly")
    first, second = waiting_for_batch(acme), waiting_for_batch(acme, items=[("Filter", "1", 2500)])
    other = waiting_for_batch(factories.client(name="Birch Homes", batching="monthly"))
    get_queue().empty()
    browser = login(office)

    page = html.unescape(browser.get("/office/billing/ready").get_data(as_text=True))
    assert "Acme Rentals" in page and "Birch Homes" in page and "Weekly batch" in page
    for job in (first, second, other):
        assert f'name="job_ids" value="{job.id}"' in page and job.number in page
    assert "Bill now: one invoice for Acme Rentals" in page

    response = browser.post_form("/office/billing/bill-now", {"job_ids": [first.id, second.id]})
    assert response.status_code == 303 and response.headers["Location"].endswith("/office/billing/ready")
    page = html.unescape(browser.get("/office/billing/ready").get_data(as_text=True))
    assert "Billing 2 jobs for Acme Rentals" in page
    assert first.number not in page and other.number in page
    batch = db.session.query(BillingBatch).one()
    assert batch.client_id == acme.id and {r.job_id for r in batch.records} == {first.id, second.id}
    assert [r.total for r in batch.records] == [17000, 2500]
    assert refresh(first).billing_status == BillingStatus.PENDING
    assert refresh(other).billing_status == BillingStatus.READY_TO_BILL
    assert queued(PROCESS_BATCH) == [(batch.id,)]

    # The job page polls while its batch is pending.
    body = component(browser.htmx("GET", f"/office/jobs/{first.id}/billing"))
    assert 'hx-trigger="every 3s"' in body and "One invoice for 2 jobs of Acme Rentals" in body

    response = browser.post_form("/office/billing/bill-now", {"job_ids": [first.id]})
    assert "None of those jobs is ready to bill." in html.unescape(browser.get(response.headers["Location"])
                                                                     .get_data(as_text=True))
    response = browser.post_form("/office/billing/bill-now", {})
    assert "Choose at least one job to bill." in browser.get(response.headers["Location"]).get_data(as_text=True)
    assert db.session.query(BillingBatch).count() == 1


def test_a_failed_batch_is_listed_and_retried_as_one(db, login, office):
    acme = factories.client(name="Acme Rentals", batching="manual")
    jobs = [waiting_for_batch(acme), waiting_for_batch(acme)]
    (batch,) = bill_now([job.id for job in jobs], by=factories.system())
    db.session.commit()
    batch = pipeline.claim(BillingBatch, batch.id)
    pipeline.note_batch_failure(batch, StripeRefused("Stripe refused: No such customer"), final=True)
    get_queue().empty()
    browser = login(office)

    body = component(browser.htmx("GET", f"/office/jobs/{jobs[0].id}/billing"))
    assert "Billing failed: Stripe refused: No such customer" in body and "retrying retries them all" in body
    page = html.unescape(browser.get("/office/billing/attention").get_data(as_text=True))
    assert "Batch invoices failed (1)" in page and jobs[0].number in page and jobs[1].number in page
    assert "Billing failed (" not in page  # the jobs' own triggers did not fail

    body = component(act(browser, jobs[1], "retry"))
    assert "a fresh round of attempts" in body and 'hx-trigger="every 3s"' in body
    batch = db.session.get(BillingBatch, batch.id)
    db.session.refresh(batch)
    assert batch.status == TriggerStatus.PENDING and batch.attempts == 0
    assert {refresh(job).billing_status for job in jobs} == {BillingStatus.PENDING}
    assert queued(PROCESS_BATCH) == [(batch.id,)]
    assert ("billing.retry_requested", OFFICE_LABEL) in trail(browser, jobs[0])


# --- Who may use these screens -------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["crew", "partner"])
def test_crew_and_partners_get_404_and_change_nothing(db, login, stripe, role, request):
    user = request.getfixturevalue(role)
    client_row = factories.client(billing_mode="invoice", send_mode="draft")
    job = billed_job(client_row)
    if role == "crew":
        job.crew.append(user)  # even the job's own crew
        db.session.commit()
    bill = job.live_billing_record
    browser = login(user)
    gets = [f"/office/jobs/{job.id}/billing", "/office/billing/attention", "/office/billing/ready"]
    posts = [f"/office/jobs/{job.id}/billing/{action}" for action in
             ("approve", "void", "rebill", "paid-offline", "no-charge", "resend", "retry")]
    posts.append("/office/billing/bill-now")
    form = {"reason": "Hijacked", "method": "cash", "job_ids": str(job.id)}
    answers = {url: browser.get(url).status_code for url in gets}
    answers.update({url: browser.post_form(url, form).status_code for url in posts})
    answers.update({f"htmx {url}": act(browser, job, url.rsplit("/", 1)[1]).status_code for url in posts[:-1]})
    assert set(answers.values()) == {404}, answers
    job = refresh(job)
    assert job.billing_status == BillingStatus.DRAFT and job.live_billing_record.id == bill.id
    assert stripe.v1.invoices.retrieve(bill.stripe_invoice_id).status == "draft"
    assert get_queue().count == 0


def test_an_email_whose_sending_is_unconfirmed_is_listed_for_the_office(app, login, office):
    from datetime import timedelta

    from portal.billing.models import CustomerEmail, EmailKind
    from portal.extensions import db
    from portal.timeutil import utcnow
    from tests.fixtures.billing import billed_record

    billed = billed_record()
    db.session.add(CustomerEmail(record=billed.record, kind=EmailKind.BILL, recipients="ap@harbor.example.com",
                                 subject="Job", message_id="<lost@closeout.test>",
                                 claimed_at=utcnow() - timedelta(hours=1), error="connection lost after DATA"))
    db.session.commit()
    page = login(office).get("/office/billing/attention").get_data(as_text=True)
    assert "Emails not confirmed sent (1)" in page
    assert billed.job.number in page and "connection lost after DATA" in page
