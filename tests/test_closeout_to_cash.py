"""Closeout to cash, end to end: real worker process, Stripe sandbox, PostgreSQL, Redis and SMTP."""
import pytest
from pypdf import PdfReader
import io

from portal.audit.services import Actor
from portal.billing.models import BillingRecord, BillingStatus, BillingTrigger, CustomerEmail, TriggerStatus
from portal.extensions import db
from portal.jobs.models import Job
from tests import factories

LINES = [("Labor", "2.5", 8500), ("Faucet cartridge", "3", 3333), ("Disposal fee", "1.333", 1000)]
TOTAL = 21250 + 9999 + 1333


def completed_by_crew(login, crew, client_row, items=LINES):
    job = factories.job(client_row, crew=[crew], items=items)
    response = login(crew).post_form(f"/crew/jobs/{job.id}/complete")
    assert response.status_code == 303
    return job.id


def job_status(job_id):
    return db.session.get(Job, job_id).billing_status


def trigger_done(job_id):
    trigger = db.session.scalars(db.select(BillingTrigger).where(BillingTrigger.job_id == job_id)).one()
    return trigger.status == TriggerStatus.DONE


def stripe_objects(stack, kind):
    return stack.sandbox.control("GET", f"objects/{kind}")["data"]


def bill_email_parts(message):
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    pdfs = [part for part in message.iter_attachments() if part.get_content_type() == "application/pdf"]
    return html, text, pdfs


def test_invoice_auto_send_bills_once_and_emails_the_pdf_and_pay_link(billing_stack, login, crew):
    client_row = factories.client(billing_mode="invoice", send_mode="auto", days_until_due=14,
                                  billing_emails=["ap@acme.test", "pm@acme.test"])
    job_id = completed_by_crew(login, crew, client_row)

    billing_stack.wait_for(lambda: job_status(job_id) == BillingStatus.SENT and billing_stack.smtp.messages,
                           message="the invoice to be sent and emailed")

    job = db.session.get(Job, job_id)
    billing_record = job.live_billing_record
    invoices = stripe_objects(billing_stack, "invoice")
    assert len(invoices) == 1
    invoice = invoices[0]
    assert invoice["id"] == billing_record.stripe_invoice_id
    assert invoice["status"] == "open" and invoice["total"] == TOTAL == billing_record.total
    assert invoice["collection_method"] == "send_invoice"
    assert invoice["metadata"]["job_id"] == str(job_id) and invoice["metadata"]["job_number"] == job.number
    assert job.number in invoice["description"]
    assert [line["amount"] for line in invoice["lines"]["data"]] == [21250, 9999, 1333]
    assert billing_record.hosted_url == invoice["hosted_invoice_url"]
    assert billing_record.due_at is not None and billing_record.invoice_number == invoice["number"]

    (message,) = billing_stack.smtp.messages
    assert sorted(message["To"].addresses[i].addr_spec for i in range(2)) == ["ap@acme.test", "pm@acme.test"]
    assert job.number in message["Subject"] and "$325.82" in message["Subject"]
    html, text, pdfs = bill_email_parts(message)
    assert invoice["hosted_invoice_url"] in html and invoice["hosted_invoice_url"] in text
    (pdf,) = pdfs
    pdf_text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.get_content())).pages)
    assert job.number in pdf_text and "$325.82" in pdf_text
    trigger = db.session.scalars(db.select(BillingTrigger).where(BillingTrigger.job_id == job_id)).one()
    assert trigger.status == TriggerStatus.DONE and trigger.proof_sha256 in pdf_text.replace("\n", "")
    assert db.session.query(CustomerEmail).count() == 1


def test_draft_policy_waits_for_approval_then_sends(billing_stack, login, crew, office):
    client_row = factories.client(billing_mode="invoice", send_mode="draft")
    job_id = completed_by_crew(login, crew, client_row)
    billing_stack.wait_for(lambda: job_status(job_id) == BillingStatus.DRAFT, message="a draft invoice")
    (invoice,) = stripe_objects(billing_stack, "invoice")
    assert invoice["status"] == "draft" and invoice["total"] == TOTAL
    assert billing_stack.smtp.messages == []

    from portal.billing.services import approve_draft

    approve_draft(db.session.get(Job, job_id).live_billing_record, by=Actor.for_user(office))
    billing_stack.wait_for(lambda: billing_stack.smtp.messages, message="the email after approval")
    assert job_status(job_id) == BillingStatus.SENT
    (invoice,) = stripe_objects(billing_stack, "invoice")
    assert invoice["status"] == "open"
    assert len(billing_stack.smtp.messages) == 1


def test_payment_link_mode_with_25_items_keeps_the_total_exact(billing_stack, login, crew):
    client_row = factories.client(billing_mode="payment_link", send_mode="auto")
    items = [(f"Part {n}", "1.5", 1001 + n) for n in range(25)]
    job_id = completed_by_crew(login, crew, client_row, items=items)
    billing_stack.wait_for(lambda: job_status(job_id) == BillingStatus.SENT and billing_stack.smtp.messages,
                           message="the payment link email")
    job = db.session.get(Job, job_id)
    (link,) = stripe_objects(billing_stack, "payment_link")
    line_items = billing_stack.sandbox.client().v1.payment_links.line_items.list(link["id"], params={"limit": 100})
    assert len(line_items.data) <= 20
    assert sum(item.amount_total for item in line_items.data) == job.totals.total
    assert link["metadata"]["job_id"] == str(job_id)
    assert link["url"] == job.live_billing_record.hosted_url
    html, _, _ = bill_email_parts(billing_stack.smtp.messages[0])
    assert link["url"] in html


def test_no_charge_job_bills_nothing(billing_stack, login, crew):
    client_row = factories.client(allow_no_charge=True)
    job_id = completed_by_crew(login, crew, client_row, items=[])
    assert job_status(job_id) == BillingStatus.NO_CHARGE
    assert db.session.query(BillingTrigger).count() == 0
    assert stripe_objects(billing_stack, "invoice") == [] and billing_stack.smtp.messages == []


@pytest.mark.parametrize("mode", ["500", "429", "hang"])
@pytest.mark.parametrize("path", ["/v1/customers", "/v1/invoices", "/v1/invoiceitems", "/v1/invoices/"])
def test_a_stripe_fault_on_any_step_still_gives_one_invoice_and_one_email(billing_stack, login, crew, mode, path):
    fault = {"method": "POST", "path": path, "mode": mode, "count": 1}
    if mode == "hang":
        fault["hang_seconds"] = 5  # past the SDK's 3 s timeout: the client gives up, Stripe still did the work
    billing_stack.sandbox.control("POST", "faults", fault)
    client_row = factories.client(billing_mode="invoice", send_mode="auto")
    job_id = completed_by_crew(login, crew, client_row)
    billing_stack.wait_for(lambda: trigger_done(job_id) and billing_stack.smtp.messages,
                           timeout=60, message=f"billing after a {mode} on {path}")
    assert job_status(job_id) == BillingStatus.SENT
    assert len(stripe_objects(billing_stack, "invoice")) == 1
    assert len(stripe_objects(billing_stack, "customer")) == 1
    assert len(billing_stack.smtp.messages) == 1
    trigger = db.session.scalars(db.select(BillingTrigger).where(BillingTrigger.job_id == job_id)).one()
    assert trigger.attempts >= 2 and trigger.status == TriggerStatus.DONE
