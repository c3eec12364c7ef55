"""Closeout to cash, end to end: real worker process, Stripe sandbox, PostgreSQL, Redis and SMTP."""
import io

import pytest
from pypdf import PdfReader

from portal.audit.services import Actor
from portal.billing.models import BillingRecord, BillingStatus, BillingTrigger, CustomerEmail, TriggerStatus
from portal.extensions import db
from portal.jobs.models import Job
from tests import factories
from tests.fixtures.billing import completed_by_crew

LINES = [("Labor", "2.5", 8500), ("Faucet cartridge", "3", 3333), ("Disposal fee", "1.333", 1000)]
TOTAL = 21250 + 9999 + 1333


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
    job_id = completed_by_crew(login, crew, client_row, LINES)

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
    job_id = completed_by_crew(login, crew, client_row, LINES)
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
    job_id = completed_by_crew(login, crew, client_row, items)
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
    job_id = completed_by_crew(login, crew, client_row, [])
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
    job_id = completed_by_crew(login, crew, client_row, LINES)
    billing_stack.wait_for(lambda: trigger_done(job_id) and billing_stack.smtp.messages,
                           timeout=60, message=f"billing after a {mode} on {path}")
    assert job_status(job_id) == BillingStatus.SENT
    assert len(stripe_objects(billing_stack, "invoice")) == 1
    assert len(stripe_objects(billing_stack, "customer")) == 1
    assert len(billing_stack.smtp.messages) == 1
    trigger = db.session.scalars(db.select(BillingTrigger).where(BillingTrigger.job_id == job_id)).one()
    assert trigger.attempts >= 2 and trigger.status == TriggerStatus.DONE


@pytest.mark.parametrize("batching", ["per_job", "weekly"])
@pytest.mark.parametrize("send_mode", ["draft", "auto"])
@pytest.mark.parametrize("billing_mode", ["invoice", "payment_link"])
def test_policy_matrix(billing_stack, login, crew, office, billing_mode, send_mode, batching):
    """invoice or link × draft or auto × per-job or batched: the right Stripe object, state and emails."""
    from datetime import timedelta

    from portal.billing.models import BillingBatch
    from portal.billing.services import approve_draft, run_batches
    from portal.timeutil import utcnow

    client_row = factories.client(billing_mode=billing_mode, send_mode=send_mode, batching=batching)
    job_ids = [completed_by_crew(login, crew, client_row, LINES[:2]) for _ in range(2)]
    billing_stack.wait_for(lambda: all(trigger_done(job_id) for job_id in job_ids), message="both triggers")

    if batching == "weekly":
        assert [job_status(job_id) for job_id in job_ids] == [BillingStatus.READY_TO_BILL] * 2
        assert stripe_objects(billing_stack, "invoice") == [] and billing_stack.smtp.messages == []
        run_batches(by=Actor.system("test"), now=utcnow() + timedelta(days=7))
        billing_stack.wait_for(lambda: db.session.query(BillingBatch).filter_by(status=TriggerStatus.DONE).count(),
                               message="the batch invoice")
        (invoice,) = stripe_objects(billing_stack, "invoice")  # batches are always one invoice
        numbers = [db.session.get(Job, job_id).number for job_id in job_ids]
        descriptions = [line["description"] for line in invoice["lines"]["data"]]
        assert len(descriptions) == 4 and all(d.split(":")[0] in numbers for d in descriptions)
        assert invoice["total"] == 2 * (21250 + 9999)
    elif billing_mode == "invoice":
        assert len(stripe_objects(billing_stack, "invoice")) == 2
        assert stripe_objects(billing_stack, "payment_link") == []
    else:
        assert len(stripe_objects(billing_stack, "payment_link")) == 2
        assert stripe_objects(billing_stack, "invoice") == []

    expected_emails = 1 if batching == "weekly" else 2
    if send_mode == "draft":
        assert {job_status(job_id) for job_id in job_ids} == {BillingStatus.DRAFT}
        assert billing_stack.smtp.messages == []
        for job_id in job_ids:
            record_row = db.session.get(Job, job_id).live_billing_record
            if record_row.status == BillingStatus.DRAFT:
                approve_draft(record_row, by=Actor.for_user(office))
    billing_stack.wait_for(lambda: len(billing_stack.smtp.messages) >= expected_emails, message="the emails")
    assert {job_status(job_id) for job_id in job_ids} == {BillingStatus.SENT}
    assert len(billing_stack.smtp.messages) == expected_emails
    assert db.session.query(BillingRecord).filter_by(live=True).count() == 2


def test_unicode_and_html_in_notes_reach_the_pdf_and_email_as_text(billing_stack, login, crew):
    from portal.jobs.services import add_note

    note = 'Ünïcødé — 東京 ✓ <script>alert(1)</script> <img src="file:///etc/passwd">'
    client_row = factories.client(billing_mode="invoice", send_mode="auto", name="Café Zoë & Søn")
    job = factories.job(client_row, crew=[crew], items=[("Réparation «spéciale»", "1", 12345)])
    add_note(job, note, by=Actor.for_user(crew))
    db.session.commit()
    assert login(crew).post_form(f"/crew/jobs/{job.id}/complete").status_code == 303
    billing_stack.wait_for(lambda: trigger_done(job.id) and billing_stack.smtp.messages, message="the email")

    html, text, (pdf,) = bill_email_parts(billing_stack.smtp.messages[0])
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html
    assert 'src="file:' not in html and "Ünïcødé — 東京" in html
    assert note in text
    pdf_text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.get_content())).pages)
    assert "<script>alert(1)</script>" in pdf_text and "Café Zoë & Søn" in pdf_text
    (invoice,) = stripe_objects(billing_stack, "invoice")
    assert invoice["lines"]["data"][0]["description"].startswith("Réparation «spéciale»")


def test_a_resumed_trigger_finds_its_invoice_after_stripe_forgot_the_key(app, stripe_sandbox, smtp_server, crew,
                                                                         monkeypatch):
    """A worker died after Stripe created the invoice but before we saved its id; a day later it resumes."""
    from portal.billing import pipeline, stripe_gateway
    from portal.billing.tasks import process_billing_trigger
    from portal.jobs.services import complete_job

    monkeypatch.setitem(app.config, "STRIPE_API_BASE", stripe_sandbox.url)
    monkeypatch.setitem(app.config, "STRIPE_SECRET_KEY", stripe_sandbox.api_key)
    monkeypatch.setitem(app.extensions, "closeout_stripe", None)
    app.extensions.pop("closeout_stripe")
    client_row = factories.client(billing_mode="invoice", send_mode="auto")
    job = factories.job(client_row, crew=[crew], items=LINES)
    complete_job(job, by=Actor.for_user(crew))
    db.session.commit()
    trigger = pipeline.claim(BillingTrigger, job.billing_triggers[-1].id)
    pipeline.prepare_proof(trigger)
    billing_record = pipeline.open_record(trigger)
    intent = pipeline.InvoiceIntent.for_record(billing_record)
    customer_id = pipeline.ensure_customer(client_row)
    description, footer = pipeline.invoice_context([job])
    orphan = stripe_gateway.create_invoice(customer_id=customer_id, currency="usd", days_until_due=30,
                                           description=description, footer=footer, metadata=intent.metadata,
                                           key=f"{intent.key_prefix}-invoice")
    # The crash: the id never reached our database, and the lease ran out.
    trigger.lease_until = None
    db.session.commit()
    stripe_sandbox.control("POST", "clock/advance", {"seconds": 25 * 3600})  # Stripe forgets idempotency keys

    process_billing_trigger(trigger.id)

    invoices = stripe_sandbox.control("GET", "objects/invoice")["data"]
    assert [invoice["id"] for invoice in invoices] == [orphan.id]
    assert invoices[0]["status"] == "open" and invoices[0]["total"] == TOTAL
    db.session.refresh(billing_record)
    assert billing_record.stripe_invoice_id == orphan.id and billing_record.status == BillingStatus.SENT
    assert len(smtp_server.messages) == 1
