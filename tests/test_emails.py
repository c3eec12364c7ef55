"""The customer's billing email (issue 4, section 4), sent to a real SMTP server on loopback."""
import hashlib
import re
import threading
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from sqlalchemy import select

from portal.audit.models import AuditEntry
from portal.audit.services import Actor
from portal.billing.emails import (MailRefused, MailUnavailable, resend_bill_email, send_bill_email,
                                   unconfirmed_emails)
from portal.billing.models import (BillingBatch, BillingRecord, BillingStatus, CustomerEmail, DocumentLink,
                                   EmailKind, RecordKind)
from portal.errors import TransitionNotAllowed
from portal.extensions import db as _db
from portal.timeutil import utcnow
from tests import factories
from tests.fixtures.billing import PAY_URL, billed_record, pdf_bytes

WORKER = factories.system()
OFFICE_EMAIL = "office@closeout.example"


@pytest.fixture(autouse=True)
def mail_settings(app):
    saved = {name: app.config.get(name) for name in
             ("OFFICE_EMAIL", "MAIL_FROM", "BUSINESS_NAME", "COPY_OFFICE_ON_BILLS", "EMAIL_MAX_ATTACHMENT_BYTES",
              "PUBLIC_URL")}
    app.config.update(OFFICE_EMAIL=OFFICE_EMAIL, MAIL_FROM="billing@closeout.example", BUSINESS_NAME="Bayport Plumbing",
                      COPY_OFFICE_ON_BILLS=False, EMAIL_MAX_ATTACHMENT_BYTES=8 * 1024 * 1024,
                      PUBLIC_URL="http://portal.example")
    yield
    app.config.update(saved)


def html_of(message):
    return message.get_body(("html",)).get_content()


def text_of(message):
    return message.get_body(("plain",)).get_content()


def attachments_of(message):
    return {part.get_filename(): part.get_content() for part in message.iter_attachments()}


def inline_images_of(message):
    return {part["Content-ID"].strip("<>"): part.get_content()
            for part in message.walk() if part.get_content_maintype() == "image"}


class References(HTMLParser):
    """Every URL the HTML would load or link to, by attribute."""

    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href", "background", "srcset", "poster", "action", "data") and value is not None:
                self.urls.append((tag, name, value))
            if name == "style" and value and "url(" in value:
                self.urls.append((tag, name, value))


def references(html):
    parser = References()
    parser.feed(html)
    return parser.urls


def emails_for(billing_record):
    return _db.session.scalars(select(CustomerEmail).where(CustomerEmail.record_id == billing_record.id)
                               .order_by(CustomerEmail.id)).all()


def actions_for(job):
    return _db.session.scalars(select(AuditEntry.action).where(AuditEntry.job_id == job.id)).all()


def test_the_bill_reaches_every_billing_address_with_pay_button_pdf_and_photos(db, smtp_server, crew, other_crew):
    client = factories.client(name="Harbor View", billing_emails=["ap@harbor.example", "owner@harbor.example"])
    billed = billed_record(client, crew=[crew, other_crew], items=[("Labor", "2", 8500), ("Cartridge", "1", 2450)],
                           photos=4)

    email_row = send_bill_email(billed.record, by=WORKER)

    assert len(smtp_server.messages) == 1
    message = smtp_server.messages[0]
    number = billed.job.number
    assert message["Subject"] == f"Job {number}: $194.50 due"
    assert message["To"].addresses[0].addr_spec == "ap@harbor.example"
    assert [a.addr_spec for a in message["To"].addresses] == ["ap@harbor.example", "owner@harbor.example"]
    assert smtp_server.envelopes[0] == ("billing@closeout.example", ["ap@harbor.example", "owner@harbor.example"])
    assert str(message["From"]) == "Bayport Plumbing <billing@closeout.example>"
    assert str(message["Reply-To"]) == OFFICE_EMAIL
    assert message["Message-ID"] == email_row.message_id
    assert message.get_content_type() == "multipart/mixed"

    html = html_of(message)
    assert "Hello Harbor View," in html
    assert "410 Pier Road, Bayport" in html and "Replace the kitchen faucet" in html
    assert "Casey, Robin" in html  # crew first names
    assert "Cartridge" in html and "$24.50" in html and "$170.00" in html
    assert "INV-0042" in html and "Due by" in html
    assert f">Pay $194.50</a>" in html
    assert [url for _, name, url in references(html) if name == "href"] == [PAY_URL]
    assert billed.record.trigger.proof_sha256 in html

    text = text_of(message)
    assert PAY_URL in text and "$194.50" in text and "Cartridge: 1 each x $24.50 = $24.50" in text
    assert billed.record.trigger.proof_sha256 in text

    assert attachments_of(message) == {f"proof-of-work-{number}.pdf": billed.proof}
    images = inline_images_of(message)
    assert sorted(images.values()) == sorted(billed.thumbnails[1:])  # the three most recent photos
    srcs = [url for _, name, url in references(html) if name == "src"]
    assert sorted(srcs) == sorted(f"cid:{cid}" for cid in images)

    assert email_row.kind == EmailKind.BILL and email_row.sent_at is not None and email_row.error is None
    assert email_row.recipients == "ap@harbor.example, owner@harbor.example"
    assert "email.sent" in actions_for(billed.job)


def test_a_payment_link_says_pay_online_and_has_no_due_date(db, smtp_server):
    billed = billed_record(kind=RecordKind.PAYMENT_LINK)

    send_bill_email(billed.record, by=WORKER)

    message = smtp_server.messages[0]
    assert message["Subject"] == f"Job {billed.job.number}: $170.00 due — pay online"
    assert "Due by" not in html_of(message)
    assert ">Pay $170.00</a>" in html_of(message)


def test_a_pdf_over_the_limit_is_linked_through_a_hashed_expiring_token(app, db, client, smtp_server):
    app.config["EMAIL_MAX_ATTACHMENT_BYTES"] = 2000
    billed = billed_record(proof=pdf_bytes(padding=5000))

    send_bill_email(billed.record, by=WORKER)

    message = smtp_server.messages[0]
    assert attachments_of(message) == {}
    links = re.findall(r"http://portal\.example/d/([A-Za-z0-9_-]+)", html_of(message))
    assert len(links) == 1 and links == re.findall(r"http://portal\.example/d/([A-Za-z0-9_-]+)", text_of(message))
    token = links[0]
    assert len(token) >= 43  # token_urlsafe(32): 256 bits
    stored = db.session.scalars(select(DocumentLink)).all()
    assert [link.token_hash for link in stored] == [hashlib.sha256(token.encode()).hexdigest()]
    assert stored[0].expires_at > utcnow() + timedelta(days=59)

    with client.get(f"/d/{token}") as response:
        assert response.status_code == 200
        assert response.mimetype == "application/pdf"
        assert response.data == billed.proof


def test_copy_office_setting_adds_the_office_as_a_hidden_recipient(app, db, smtp_server):
    app.config["COPY_OFFICE_ON_BILLS"] = True
    billed = billed_record(factories.client(billing_emails=["ap@harbor.example"]))

    email_row = send_bill_email(billed.record, by=WORKER)

    message = smtp_server.messages[0]
    assert smtp_server.envelopes[0][1] == ["ap@harbor.example", OFFICE_EMAIL]
    assert [a.addr_spec for a in message["To"].addresses] == ["ap@harbor.example"]
    assert message["Bcc"] is None and message["Cc"] is None
    assert email_row.recipients == f"ap@harbor.example, {OFFICE_EMAIL}"


def test_sending_twice_sends_one_email(db, smtp_server):
    billed = billed_record()

    first = send_bill_email(billed.record, by=WORKER)
    second = send_bill_email(billed.record, by=WORKER)

    assert len(smtp_server.messages) == 1
    assert first.id == second.id
    assert len(emails_for(billed.record)) == 1
    assert actions_for(billed.job).count("email.sent") == 1


def test_two_workers_at_once_send_one_email(app, db, smtp_server):
    billed = billed_record()
    record_id = billed.record.id
    start = threading.Barrier(2)
    outcomes = []

    def worker():
        with app.app_context():
            try:
                billing_record = _db.session.get(BillingRecord, record_id)
                start.wait()
                outcomes.append(send_bill_email(billing_record, by=WORKER).id)
            finally:
                _db.session.remove()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(outcomes) == 2 and outcomes[0] == outcomes[1]
    assert len(smtp_server.messages) == 1
    assert len(emails_for(billed.record)) == 1


def test_mail_server_down_then_up_sends_exactly_once(app, db, client, smtp_server):
    app.config["EMAIL_MAX_ATTACHMENT_BYTES"] = 2000  # so that each attempt issues a document link
    billed = billed_record(proof=pdf_bytes(padding=5000))
    smtp_server.stop()

    with pytest.raises(MailUnavailable):
        send_bill_email(billed.record, by=WORKER)

    assert emails_for(billed.record) == []  # no claim left behind: a retry may send
    assert "email.failed" in actions_for(billed.job)
    assert [link.revoked_at is not None for link in db.session.scalars(select(DocumentLink))] == [True]

    smtp_server.start()
    email_row = send_bill_email(billed.record, by=WORKER)
    send_bill_email(billed.record, by=WORKER)  # the task's retry after success

    assert len(smtp_server.messages) == 1
    assert email_row.sent_at is not None
    (token,) = re.findall(r"http://portal\.example/d/([A-Za-z0-9_-]+)", html_of(smtp_server.messages[0]))
    with client.get(f"/d/{token}") as response:
        assert response.status_code == 200 and response.data == billed.proof


def test_a_lost_reply_is_never_resent_automatically(db, smtp_server, monkeypatch):
    monkeypatch.setattr("portal.billing.emails.SMTP_TIMEOUT_SECONDS", 0.5)
    smtp_server.reply_delay = 3
    billed = billed_record()

    with pytest.raises(MailUnavailable) as raised:
        send_bill_email(billed.record, by=WORKER)
    assert raised.value.may_have_sent

    smtp_server.reply_delay = 0
    again = send_bill_email(billed.record, by=WORKER)

    assert len(smtp_server.messages) == 1  # the server kept it before the reply was lost
    assert again.sent_at is None and "Delivery uncertain" in again.error
    assert unconfirmed_emails(now=utcnow() + timedelta(minutes=11)) == [again]


def test_a_claim_left_by_a_crash_is_not_resent(db, smtp_server):
    billed = billed_record()
    crashed = CustomerEmail(record=billed.record, kind=EmailKind.BILL, recipients="ap@example.test", subject="s",
                            message_id="<crashed@closeout.example>", claimed_at=utcnow() - timedelta(minutes=30))
    db.session.add(crashed)
    db.session.commit()

    assert send_bill_email(billed.record, by=WORKER).id == crashed.id
    assert smtp_server.messages == []
    assert unconfirmed_emails() == [crashed]


def test_a_client_without_billing_email_is_a_permanent_error(db, smtp_server):
    billed = billed_record(factories.client(billing_emails=[]))

    with pytest.raises(MailRefused, match="no billing email"):
        send_bill_email(billed.record, by=WORKER)

    assert smtp_server.messages == []
    assert emails_for(billed.record) == []


def test_every_address_refused_is_permanent_and_one_refused_is_noted(db, smtp_server):
    smtp_server.refuse.update({"gone@harbor.example"})
    refused = billed_record(factories.client(billing_emails=["gone@harbor.example"]))
    with pytest.raises(MailRefused, match="refused every billing address"):
        send_bill_email(refused.record, by=WORKER)
    assert emails_for(refused.record) == []

    partly = billed_record(factories.client(billing_emails=["gone@harbor.example", "ap@harbor.example"]))
    email_row = send_bill_email(partly.record, by=WORKER)
    assert smtp_server.envelopes == [("billing@closeout.example", ["ap@harbor.example"])]
    assert email_row.sent_at is not None and "gone@harbor.example" in email_row.error


def test_resend_sends_the_same_bill_again_as_a_new_message(db, smtp_server, office):
    billed = billed_record()
    first = send_bill_email(billed.record, by=WORKER)

    again = resend_bill_email(billed.record, by=Actor.for_user(office))

    assert len(smtp_server.messages) == 2
    original, resent = smtp_server.messages
    assert resent["Subject"] == original["Subject"]
    assert resent["Message-ID"] != original["Message-ID"] == first.message_id
    assert attachments_of(resent) == attachments_of(original) == {f"proof-of-work-{billed.job.number}.pdf":
                                                                   billed.proof}
    assert [row.kind for row in emails_for(billed.record)] == [EmailKind.BILL, EmailKind.RESEND]
    assert again.sent_at is not None
    assert again.created_by == Actor.for_user(office).label
    assert "email.resent" in actions_for(billed.job)


@pytest.mark.parametrize("status", [BillingStatus.PAID, BillingStatus.PROCESSING, BillingStatus.VOID])
def test_a_bill_settled_before_its_email_gets_none(db, smtp_server, status):
    billed = billed_record(status=status)

    assert send_bill_email(billed.record, by=WORKER) is None
    with pytest.raises(TransitionNotAllowed):
        resend_bill_email(billed.record, by=WORKER)

    assert smtp_server.messages == []
    assert emails_for(billed.record) == []
    assert "email.skipped" in actions_for(billed.job)


@pytest.mark.parametrize("status", [BillingStatus.DRAFT, BillingStatus.PENDING, BillingStatus.FAILED])
def test_a_bill_not_sent_yet_cannot_be_emailed(db, smtp_server, status):
    billed = billed_record(status=status)

    with pytest.raises(TransitionNotAllowed):
        send_bill_email(billed.record, by=WORKER)
    with pytest.raises(TransitionNotAllowed):
        resend_bill_email(billed.record, by=WORKER)

    assert smtp_server.messages == []


HOSTILE_NOTE = '<img src="file:///etc/passwd"> see http://169.254.169.254/latest/meta-data/ <script>alert(1)</script>'
HOSTILE_ITEM = '<a href="http://169.254.169.254/latest/">Valve</a><img src=x onerror=alert(1)>'


def test_html_and_urls_in_notes_and_items_are_text_that_fetches_nothing(db, smtp_server):
    billed = billed_record(notes=[HOSTILE_NOTE], items=[(HOSTILE_ITEM, "1", 5000)],
                           scope='<link rel="stylesheet" href="file:///etc/passwd">Fix it')

    send_bill_email(billed.record, by=WORKER)

    message = smtp_server.messages[0]
    html = html_of(message)
    assert "&lt;img src=&#34;file:///etc/passwd&#34;&gt;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;a href=&#34;http://169.254.169.254/latest/&#34;&gt;Valve&lt;/a&gt;" in html
    assert '<img src="file:' not in html and "<script" not in html and "<link" not in html
    for tag, name, url in references(html):
        assert url.startswith("cid:") if name == "src" else url == PAY_URL, (tag, name, url)
    assert HOSTILE_NOTE in text_of(message)  # the plain-text part shows it as the words it is


def test_a_batch_invoice_is_one_email_listing_every_job(db, smtp_server):
    client = factories.client(billing_emails=["payables@northgate.example"], batching="weekly")
    first = billed_record(client, items=[("Labor", "1", 8500)])
    second = billed_record(client, items=[("Parts", "2", 1250)])
    batch = BillingBatch(client=client, period_key="2026-W48")
    db.session.add(batch)
    for billed in (first, second):
        billed.record.batch = batch
        billed.record.stripe_invoice_id = "in_batch"
    db.session.commit()

    send_bill_email(second.record, by=WORKER)
    send_bill_email(first.record, by=WORKER)

    assert len(smtp_server.messages) == 1
    message = smtp_server.messages[0]
    assert message["Subject"] == f"Jobs {first.job.number}, {second.job.number}: $110.00 due"
    html = html_of(message)
    assert f"Job {first.job.number}" in html and f"Job {second.job.number}" in html and "$25.00" in html
    assert attachments_of(message) == {f"proof-of-work-{first.job.number}.pdf": first.proof,
                                       f"proof-of-work-{second.job.number}.pdf": second.proof}
