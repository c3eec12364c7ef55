"""Accounting exports: CSV streamed row by row from server-side cursors, so 100k rows never sit in memory.

Format (docs/exports.md): one header row; dates ISO 8601 (YYYY-MM-DD) in the business time zone;
timestamps ISO 8601 in UTC; amounts as decimal strings in major units ("1234.50") beside a
`currency` column (ISO 4217, lower case, as Stripe writes it).
"""
import csv
import io
import json
from decimal import Decimal

from sqlalchemy import select

from portal.audit.models import AuditEntry
from portal.billing.models import BillingRecord as R
from portal.clients.models import Client
from portal.dashboard.services import in_period
from portal.extensions import db
from portal.jobs.models import Job
from portal.money import CURRENCY_EXPONENTS
from portal.referrals.models import Partner, Payout
from portal.timeutil import to_business_time

ROWS_PER_CHUNK = 500
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def major_units(amount, currency):
    """8500, 'usd' → '85.00'; exact, from integer minor units (never a float)."""
    exponent = CURRENCY_EXPONENTS.get(currency.lower(), 2)
    return str(Decimal(int(amount or 0)).scaleb(-exponent).quantize(Decimal(1).scaleb(-exponent)))


def local_date(moment):
    return to_business_time(moment).date().isoformat() if moment is not None else ""


def utc_timestamp(moment):
    return moment.isoformat(timespec="seconds") if moment is not None else ""


def text(value):
    """A text cell; one that a spreadsheet would run as a formula is quoted with a leading apostrophe."""
    value = "" if value is None else str(value)
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def invoices(period):
    header = ["invoice_date", "invoice_number", "record_id", "job_number", "client", "kind", "status", "currency",
              "subtotal", "tax", "total", "amount_paid", "amount_refunded", "due_date", "paid_date", "stripe_id"]
    query = (select(R.sent_at, R.invoice_number, R.id, Job.number, Client.name, R.kind, R.status, R.currency,
                    R.subtotal, R.tax, R.total, R.amount_paid, R.amount_refunded, R.due_at, R.paid_at,
                    R.stripe_invoice_id, R.stripe_payment_link_id)
             .join(Job, Job.id == R.job_id).join(Client, Client.id == Job.client_id)
             .where(in_period(R.sent_at, period)).order_by(R.sent_at, R.id))

    def row(r):
        money = [major_units(amount, r.currency) for amount in (r.subtotal, r.tax, r.total, r.amount_paid,
                                                                 r.amount_refunded)]
        return [local_date(r.sent_at), text(r.invoice_number), r.id, r.number, text(r.name), r.kind.value,
                r.status.value, r.currency, *money, local_date(r.due_at), local_date(r.paid_at),
                r.stripe_invoice_id or r.stripe_payment_link_id or ""]

    return header, query, row


def payments(period):
    header = ["payment_date", "job_number", "invoice_number", "client", "method", "currency", "amount", "record_id",
              "stripe_id"]
    query = (select(R.paid_at, Job.number, R.invoice_number, Client.name, R.kind, R.currency, R.amount_paid, R.id,
                    R.stripe_invoice_id, R.stripe_payment_link_id)
             .join(Job, Job.id == R.job_id).join(Client, Client.id == Job.client_id)
             .where(in_period(R.paid_at, period)).order_by(R.paid_at, R.id))

    def row(r):
        return [local_date(r.paid_at), r.number, text(r.invoice_number), text(r.name), r.kind.value, r.currency,
                major_units(r.amount_paid, r.currency), r.id, r.stripe_invoice_id or r.stripe_payment_link_id or ""]

    return header, query, row


def refunds(period):
    header = ["refund_date", "job_number", "invoice_number", "client", "status", "currency", "amount_refunded",
              "amount_paid", "record_id"]
    query = (select(R.refunded_at, Job.number, R.invoice_number, Client.name, R.status, R.currency,
                    R.amount_refunded, R.amount_paid, R.id)
             .join(Job, Job.id == R.job_id).join(Client, Client.id == Job.client_id)
             .where(in_period(R.refunded_at, period)).order_by(R.refunded_at, R.id))

    def row(r):
        return [local_date(r.refunded_at), r.number, text(r.invoice_number), text(r.name), r.status.value,
                r.currency, major_units(r.amount_refunded, r.currency), major_units(r.amount_paid, r.currency), r.id]

    return header, query, row


def payouts(period):
    header = ["customer_paid_date", "payout_id", "partner", "job_number", "status", "currency", "customer_paid",
              "fee_base", "fee", "reversed", "net_fee", "transferred_date", "stripe_transfer_id"]
    query = (select(Payout.paid_on, Payout.id, Partner.name, Job.number, Payout.status, Payout.currency,
                    Payout.amount_paid, Payout.fee_base_amount, Payout.amount, Payout.amount_reversed,
                    Payout.transferred_at, Payout.stripe_transfer_id)
             .join(Partner, Partner.id == Payout.partner_id).join(Job, Job.id == Payout.job_id)
             .where(in_period(Payout.paid_on, period)).order_by(Payout.paid_on, Payout.id))

    def row(r):
        c = r.currency
        return [local_date(r.paid_on), r.id, text(r.name), r.number, r.status.value, c, major_units(r.amount_paid, c),
                major_units(r.fee_base_amount, c), major_units(r.amount, c), major_units(r.amount_reversed, c),
                major_units(r.amount - r.amount_reversed, c), local_date(r.transferred_at), r.stripe_transfer_id or ""]

    return header, query, row


def audit(period):
    header = ["timestamp_utc", "entry_id", "source", "actor", "action", "entity", "entity_id", "job_number", "field",
              "old_value", "new_value", "detail"]
    query = (select(AuditEntry.created_at, AuditEntry.id, AuditEntry.source, AuditEntry.actor_label,
                    AuditEntry.action, AuditEntry.entity_type, AuditEntry.entity_id, Job.number, AuditEntry.field,
                    AuditEntry.old_value, AuditEntry.new_value, AuditEntry.detail)
             .outerjoin(Job, Job.id == AuditEntry.job_id)
             .where(in_period(AuditEntry.created_at, period)).order_by(AuditEntry.id))

    def row(r):
        return [utc_timestamp(r.created_at), r.id, r.source.value, text(r.actor_label), r.action, r.entity_type,
                r.entity_id if r.entity_id is not None else "", r.number or "", text(r.field), text(r.old_value),
                text(r.new_value), text(json.dumps(r.detail, sort_keys=True, default=str)) if r.detail else ""]

    return header, query, row


EXPORTS = {"invoices": invoices, "payments": payments, "refunds": refunds, "payouts": payouts, "audit": audit}


def export_filename(kind, period):
    return f"closeout-{kind}-{period.first_day.isoformat()}-to-{period.last_day.isoformat()}.csv"


def export_rows(kind, period):
    """The CSV text in chunks: the header, then ROWS_PER_CHUNK rows at a time from a server-side cursor."""
    header, query, row = EXPORTS[kind](period)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180, what spreadsheet imports expect
    writer.writerow(header)
    result = db.session.execute(query.execution_options(yield_per=ROWS_PER_CHUNK))
    for chunk in result.partitions():
        writer.writerows(row(r) for r in chunk)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()
