"""The customer's billing email (issue 4, section 4): sent over SMTP at most once per billing record.

Exactly once: the `customer_emails` row is inserted and committed (a partial unique index allows
one BILL row per record) *before* SMTP is spoken to, and `sent_at` is set after the server
accepted the message. A retried task finds the row and sends nothing. A row that stays claimed
without `sent_at` (a crash mid-send, a connection lost after DATA) is shown to the office, never
resent automatically: the customer may already have it.
"""
import smtplib
import ssl
from dataclasses import dataclass, field
from datetime import timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from urllib.parse import urlsplit

from flask import current_app, render_template
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from portal.audit.services import record
from portal.billing.models import BillingStatus, CustomerEmail, EmailKind, RecordKind
from portal.documents.services import DEFAULT_DAYS, create_document_link, document_url
from portal.errors import TransitionNotAllowed, Unprocessable
from portal.extensions import db
from portal.timeutil import business_zone, utcnow
from portal.money import format_money
from portal.photos.storage import get_storage

SMTP_TIMEOUT_SECONDS = 20
MAX_THUMBNAILS = 3
DEFAULT_MAX_ATTACHMENT_BYTES = 8 * 1024 * 1024
# How long a claim may go unconfirmed before the office is told to check it.
UNCONFIRMED_AFTER = timedelta(minutes=10)
# Bills the customer can still pay: the only ones worth (re)sending a pay button for. Not
# `processing`: a bank debit is in flight, and a second "Pay" email invites paying twice.
COLLECTABLE = frozenset({BillingStatus.SENT, BillingStatus.OVERDUE, BillingStatus.PAYMENT_FAILED})
# Bills with nothing left to ask for: paying, paid, refunded, disputed, void or written off.
SETTLED = frozenset({BillingStatus.PROCESSING, BillingStatus.PAID, BillingStatus.PARTIALLY_REFUNDED,
                     BillingStatus.REFUNDED, BillingStatus.DISPUTED, BillingStatus.VOID, BillingStatus.UNCOLLECTIBLE})


class MailUnavailable(Exception):
    """The mail server could not take the message now; retrying later may work."""

    def __init__(self, message, *, may_have_sent=False):
        super().__init__(message)
        # True when the connection broke mid-conversation: the server may have accepted it.
        self.may_have_sent = may_have_sent


class MailRefused(Unprocessable):
    """The bill cannot be emailed until a person fixes something (no billing email, no pay link)."""


class AddressesRefused(MailRefused):
    """The mail server refused every billing address for good (5xx): sending again fails until they are fixed."""


@dataclass
class Thumbnail:
    cid: str  # Content-ID without angle brackets, as `cid:` URLs in the HTML use it
    data: bytes
    alt: str
    filename: str


@dataclass
class Proof:
    job: object
    filename: str
    sha256: str | None
    data: bytes | None = None  # attached
    url: str | None = None  # linked, when attaching would make the email too large
    link: object = None  # the DocumentLink row behind `url`


@dataclass
class Bill:
    """A composed bill email, ready for SMTP."""

    message: EmailMessage
    subject: str
    to: list
    envelope_to: list
    links: list = field(default_factory=list)  # DocumentLink rows issued for this message


# --- Sending ------------------------------------------------------------------------------------

def send_bill_email(billing_record, *, by):
    """Email the bill to the client's billing addresses, once per billing record; returns its CustomerEmail.

    Returns None, sending nothing, for a bill settled before its email went out (Stripe emails
    its hosted invoice too, so a customer can pay before ours leaves).
    """
    anchor = bill_anchor(billing_record)
    existing = bill_email_for(anchor)
    if existing is not None:
        return existing
    if not billing_record.live or billing_record.status in SETTLED:
        record(by, "email.skipped", billing_record, job=billing_record.job,
               detail={"status": billing_record.status.value, "live": billing_record.live})
        db.session.commit()
        return None
    require_collectable(billing_record)
    bill = compose_bill(billing_record, message_id=bill_message_id(anchor))
    claim = claim_email(anchor, bill, EmailKind.BILL, by)
    db.session.add(claim)
    try:
        db.session.commit()
    except IntegrityError:
        # Another worker claimed this bill between our check and our insert: theirs stands.
        db.session.rollback()
        existing = bill_email_for(anchor)
        if existing is None:
            raise
        return existing
    return deliver_claimed(claim, bill, by=by, action="email.sent")


def resend_bill_email(billing_record, *, by):
    """The office's "Resend the email": a new message with the same content; returns its CustomerEmail."""
    require_collectable(billing_record)
    anchor = bill_anchor(billing_record)
    bill = compose_bill(billing_record, message_id=make_msgid(idstring=f"resend-{anchor.id}", domain=mail_domain()))
    claim = claim_email(anchor, bill, EmailKind.RESEND, by)
    db.session.add(claim)
    db.session.commit()
    return deliver_claimed(claim, bill, by=by, action="email.resent")


def bill_anchor(billing_record):
    """The record the bill email belongs to: the record itself, or a batch's first record.

    A batch's records share one invoice, so they share one email, and claiming it on one
    record lets the unique index stop a second email for the same invoice.
    """
    return records_on_bill(billing_record)[0]


def records_on_bill(billing_record):
    """The records one bill covers: a batch's live records (they share its invoice), or the record alone."""
    if billing_record.batch is not None:
        return [shared for shared in billing_record.batch.records if shared.live] or [billing_record]
    return [billing_record]


def bill_email_for(anchor):
    """The BILL email claimed for this record, sent or not."""
    return db.session.scalar(
        select(CustomerEmail).where(CustomerEmail.record_id == anchor.id, CustomerEmail.kind == EmailKind.BILL)
    )


def unconfirmed_emails(now=None):
    """Emails claimed but never confirmed sent, older than a few minutes: the office must check them."""
    now = now or utcnow()
    return db.session.scalars(
        select(CustomerEmail)
        .where(CustomerEmail.sent_at.is_(None), CustomerEmail.claimed_at < now - UNCONFIRMED_AFTER)
        .order_by(CustomerEmail.id)
    ).all()


def require_collectable(billing_record):
    if not billing_record.live or billing_record.status not in COLLECTABLE:
        raise TransitionNotAllowed("Only a sent bill that is still unpaid can be emailed to the customer.")


def claim_email(anchor, bill, kind, by):
    return CustomerEmail(record=anchor, kind=kind, recipients=", ".join(bill.envelope_to), subject=bill.subject,
                         message_id=bill.message["Message-ID"], claimed_at=utcnow(), created_by=by.label)


def deliver_claimed(claim, bill, *, by, action, detail=None):
    """Speak SMTP for a committed claim, then record the outcome on it and in the audit log."""
    billing_record = claim.record
    try:
        refused = deliver(bill.message, bill.envelope_to)
    except (MailUnavailable, MailRefused) as error:
        note_failed_delivery(claim, bill, error, by=by)
        raise
    claim.sent_at = utcnow()
    if refused:
        claim.error = "Refused by the mail server: " + ", ".join(f"{a} ({code})" for a, (code, _) in refused.items())
    record(by, action, billing_record, job=billing_record.job,
           detail={"recipients": bill.envelope_to, "subject": bill.subject, "message_id": claim.message_id,
                   "linked_proofs": len(bill.links), **(detail or {})})
    db.session.commit()
    return claim


def note_failed_delivery(claim, bill, error, *, by):
    """Keep a claim the server may have accepted; drop one it certainly did not, so a retry may send."""
    billing_record = claim.record
    may_have_sent = getattr(error, "may_have_sent", False)
    if may_have_sent:
        claim.error = f"Delivery uncertain, check with the customer before resending: {error}"[:2000]
    else:
        for link in bill.links:  # never delivered, so nobody holds these tokens
            link.revoked_at = utcnow()
        db.session.delete(claim)
    record(by, "email.failed", billing_record, job=billing_record.job,
           detail={"error": str(error)[:500], "message_id": claim.message_id, "may_have_sent": may_have_sent})
    db.session.commit()


def deliver(message, envelope_to):
    """Hand the message to the SMTP server; returns the recipients it refused while accepting the rest."""
    config = current_app.config
    host, port = config.get("SMTP_HOST", "localhost"), config.get("SMTP_PORT", 25)
    try:
        # local_hostname: the default asks DNS for our FQDN, which can stall for seconds.
        smtp = smtplib.SMTP(host, port, local_hostname=mail_domain(), timeout=SMTP_TIMEOUT_SECONDS)
    except OSError as error:  # refused, unreachable, timed out, or a 4xx/5xx greeting
        raise MailUnavailable(f"Could not reach the mail server {host}:{port}: {error}") from error
    try:
        start_session(smtp, config)
        refused = transmit(smtp, message, config.get("MAIL_FROM", "billing@closeout.invalid"), envelope_to)
    except (MailUnavailable, MailRefused):
        smtp.close()  # no QUIT: after a timeout it would wait out another one for nothing
        raise
    say_goodbye(smtp)
    return refused


def start_session(smtp, config):
    """STARTTLS and login where configured; nothing has been sent yet if this fails."""
    try:
        if config.get("SMTP_STARTTLS"):
            smtp.starttls(context=ssl.create_default_context())
        if config.get("SMTP_USERNAME"):
            smtp.login(config["SMTP_USERNAME"], config.get("SMTP_PASSWORD") or "")
    except OSError as error:  # smtplib.SMTPException is an OSError too
        raise MailUnavailable(f"The mail server refused the session: {error}") from error


def transmit(smtp, message, sender, envelope_to):
    try:
        return smtp.send_message(message, from_addr=sender, to_addrs=envelope_to)
    except smtplib.SMTPRecipientsRefused as error:
        if all(code >= 500 for code, _ in error.recipients.values()):
            raise AddressesRefused("The mail server refused every billing address: "
                              + ", ".join(error.recipients)) from error
        raise MailUnavailable(f"The mail server deferred every recipient: {error.recipients}") from error
    except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError, smtplib.SMTPHeloError,
            smtplib.SMTPNotSupportedError) as error:
        # The server answered with a refusal, so it did not take the message.
        raise MailUnavailable(f"The mail server did not accept the message: {error}") from error
    except OSError as error:
        # Disconnected or timed out mid-conversation: it may have taken the message before the reply was lost.
        raise MailUnavailable(f"The connection to the mail server broke: {error!r}", may_have_sent=True) from error


def say_goodbye(smtp):
    try:
        smtp.quit()
    except OSError:  # the server has accepted the message; a failed goodbye cannot change that
        smtp.close()


# --- Composing ----------------------------------------------------------------------------------

def compose_bill(billing_record, *, message_id):
    """The bill email for a record (every job of its batch): HTML with inline thumbnails, text, proof PDFs."""
    config = current_app.config
    sharing = records_on_bill(billing_record)
    jobs = [shared.job for shared in sharing]
    client = jobs[0].client
    to, envelope_to, office = recipients_for(client)
    pay_url = pay_link_of(billing_record)

    currency = billing_record.currency
    amount_due = format_money(sum(shared.total for shared in sharing), currency)
    subject = bill_subject(jobs, amount_due, billing_record.kind)
    proofs = proofs_for(sharing, link_days(billing_record))
    thumbnails = pick_thumbnails(jobs)
    context = dict(
        business_name=config.get("BUSINESS_NAME", "Closeout Services"),
        client=client,
        jobs=[job_summary(job) for job in jobs],
        is_invoice=billing_record.kind == RecordKind.INVOICE,
        invoice_number=billing_record.invoice_number,
        due_on=local_date(billing_record.due_at),
        amount_due=amount_due,
        subtotal=format_money(sum(shared.subtotal for shared in sharing), currency),
        tax=format_money(sum(shared.tax for shared in sharing), currency),
        has_tax=any(shared.tax for shared in sharing),
        pay_url=pay_url,
        proofs=proofs,
        thumbnails=thumbnails,
        office_email=office,
        subject=subject,
    )

    message = customer_message(subject, to, office, message_id)
    message.set_content(render_template("emails/bill.txt", **context))
    message.add_alternative(render_template("emails/bill.html", **context), subtype="html")
    html_part = message.get_payload()[1]
    for thumbnail in thumbnails:
        html_part.add_related(thumbnail.data, "image", "jpeg", cid=f"<{thumbnail.cid}>", disposition="inline",
                              filename=thumbnail.filename)
    for proof in proofs:
        if proof.data is not None:
            message.add_attachment(proof.data, "application", "pdf", filename=proof.filename)
    return Bill(message=message, subject=subject, to=to, envelope_to=envelope_to,
                links=[proof.link for proof in proofs if proof.link is not None])


def customer_message(subject, to, office, message_id):
    """An empty message from the business to the customer, replies going to the office."""
    config = current_app.config
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = Address(display_name=config.get("BUSINESS_NAME", "Closeout Services"),
                              addr_spec=config.get("MAIL_FROM", "billing@closeout.invalid"))
    message["To"] = ", ".join(to)
    message["Reply-To"] = office
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = message_id
    return message


def recipients_for(client):
    """(To, envelope recipients, office address) for a customer email; refused when there is no billing email."""
    config = current_app.config
    to = [address.strip() for address in client.billing_emails or [] if address and address.strip()]
    if not to:
        raise MailRefused("The client has no billing email.")
    office = config.get("OFFICE_EMAIL") or config.get("MAIL_FROM", "billing@closeout.invalid")
    envelope_to = to + ([office] if config.get("COPY_OFFICE_ON_BILLS") and office not in to else [])
    return to, envelope_to, office


def pay_link_of(billing_record):
    """The customer's pay page; refused while the bill has none."""
    pay_url = billing_record.hosted_url or ""
    if urlsplit(pay_url).scheme not in ("https", "http"):
        raise MailRefused("The bill has no pay link yet.")
    return pay_url


def bill_subject(jobs, amount_due, kind):
    """`Job J-00012: $212.50 due`; a payment link adds `— pay online`."""
    if len(jobs) == 1:
        what = f"Job {jobs[0].number}"
    elif len(jobs) <= 3:
        what = "Jobs " + ", ".join(job.number for job in jobs)
    else:
        what = f"Jobs {jobs[0].number}, {jobs[1].number} and {len(jobs) - 2} more"
    subject = f"{what}: {amount_due} due"
    return f"{subject} — pay online" if kind == RecordKind.PAYMENT_LINK else subject


def bill_message_id(anchor):
    """Deterministic, so that a bill that somehow left twice is one message to the customer's mail client.

    The record's creation time is part of it because ids start again in a recreated (demo)
    database, and mail providers silently drop a message whose Message-ID they have seen.
    """
    return f"<bill-{anchor.id}.{anchor.created_at:%Y%m%d%H%M%S}@{mail_domain()}>"


def mail_domain():
    sender = current_app.config.get("MAIL_FROM", "billing@closeout.invalid")
    return sender.rpartition("@")[2] or "closeout.invalid"


def link_days(billing_record):
    """Proof links outlive the due date by a month, and last at least the default 60 days."""
    if billing_record.due_at is None:
        return DEFAULT_DAYS
    return max(DEFAULT_DAYS, (billing_record.due_at - utcnow()).days + 30)


def proofs_for(sharing, days):
    """Each job's proof PDF: attached while the email stays under the size limit, linked beyond it."""
    storage = get_storage()
    budget = current_app.config.get("EMAIL_MAX_ATTACHMENT_BYTES", DEFAULT_MAX_ATTACHMENT_BYTES)
    proofs = []
    for shared in sharing:
        trigger, job = shared.trigger, shared.job
        if trigger is None or trigger.proof_pdf_key is None:
            raise MailRefused(f"The proof-of-work PDF for job {job.number} is not ready.")
        proof = Proof(job=job, filename=f"proof-of-work-{job.number}.pdf", sha256=trigger.proof_sha256)
        with storage.open(trigger.proof_pdf_key) as stream:
            data = stream.read(budget + 1)  # one byte past the budget is enough to know it does not fit
        if len(data) <= budget:
            proof.data = data
            budget -= len(data)
        else:
            proof.link, raw_token = create_document_link(trigger, days)
            proof.url = document_url(raw_token)
        proofs.append(proof)
    return proofs


def pick_thumbnails(jobs):
    """Up to three photo thumbnails, the most recent first (a crew's "after" photos come last)."""
    from portal.photos.derivatives import thumbnail_key  # the derivatives module loads Pillow: worker-side only

    storage = get_storage()
    chosen = []
    for job in jobs:
        for photo in reversed(job.photos):
            if len(chosen) == MAX_THUMBNAILS:
                return chosen
            key = thumbnail_key(photo.storage_key)
            # The pipeline made every thumbnail before billing; one that is missing is left out
            # rather than holding the customer's bill back.
            if not storage.exists(key):
                continue
            with storage.open(key) as stream:
                data = stream.read()
            cid = make_msgid(idstring=f"photo{photo.id}", domain=mail_domain())[1:-1]
            chosen.append(Thumbnail(cid=cid, data=data, alt=f"Photo {len(chosen) + 1} from job {job.number}",
                                    filename=f"{job.number}-photo-{photo.id}.jpg"))
    return chosen


def job_summary(job):
    """What the email says about one job; every value is plain text, escaped by the templates."""
    currency = job.currency
    totals = job.totals
    return dict(
        number=job.number,
        address=job.address,
        completed_on=local_date(job.completed_at),
        crew=", ".join(member.name.split()[0] for member in job.crew if member.name.strip()),
        scope=job.scope,
        notes=[note.body for note in job.notes],
        lines=[dict(description=line.description, quantity=quantity_text(line.quantity), unit=line.unit,
                    unit_price=format_money(line.unit_amount, currency), amount=format_money(line.amount, currency))
               for line in job.line_items],
        subtotal=format_money(totals.subtotal, currency),
        tax=format_money(totals.tax, currency),
        has_tax=bool(totals.tax),
        total=format_money(totals.total, currency),
    )


def local_date(moment):
    """A stored UTC time as the business's calendar date, `Nov 27, 2026`."""
    if moment is None:
        return None
    return moment.astimezone(business_zone()).strftime("%b %d, %Y").replace(" 0", " ")


def quantity_text(quantity):
    """2.500 → 2.5 and 3.000 → 3."""
    text = f"{quantity:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
