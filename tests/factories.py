"""Rows for tests, built through the same services the app uses where one exists."""
import itertools
from datetime import timedelta

from portal.audit.services import Actor
from portal.auth.models import User
from portal.auth.services import create_user
from portal.clients.models import Client, Site
from portal.extensions import db
from portal.jobs.models import LineItemTemplate
from portal.jobs.services import add_line_item, create_job
from portal.timeutil import utcnow

PASSWORD = "correct horse battery"
_seq = itertools.count(1)


def user(role, *, name=None, email=None):
    n = next(_seq)
    created = create_user(email=email or f"{role}{n}@example.test", name=name or f"{role.title()} {n}",
                          role=role, password=PASSWORD)
    db.session.commit()
    return created


def system():
    return Actor.system("tests")


def client(**policy):
    n = next(_seq)
    row = Client(name=policy.pop("name", f"Client {n}"), billing_emails=policy.pop("billing_emails", [f"ap{n}@example.com"]),
                 phone="555-0100", address=f"{n} Main St, Springfield", **policy)
    db.session.add(row)
    db.session.commit()
    return row


def site(client_row, **fields):
    n = next(_seq)
    row = Site(client=client_row, name=fields.pop("name", f"Site {n}"), address=fields.pop("address", f"{n} Oak Ave, Springfield"), **fields)
    db.session.add(row)
    db.session.commit()
    return row


def template(name="Labor", unit_amount=8500, unit="hour", taxable=False, **fields):
    row = LineItemTemplate(name=name, unit_amount=unit_amount, unit=unit, taxable=taxable, **fields)
    db.session.add(row)
    db.session.commit()
    return row


def job(client_row=None, *, crew=(), items=(), scheduled_in=timedelta(hours=2), **fields):
    """A scheduled job; items are (description, quantity, unit_amount) tuples."""
    client_row = client_row or client()
    created = create_job(client_row, by=system(), crew=list(crew), scheduled_start=utcnow() + scheduled_in,
                         scope=fields.pop("scope", "Replace the kitchen faucet"), **fields)
    for description, quantity, unit_amount in items:
        add_line_item(created, by=system(), description=description, quantity=quantity, unit_amount=unit_amount)
    db.session.commit()
    return created


def get_user(user_id):
    return db.session.get(User, user_id)


def partner(user_row=None, *, name=None, **fields):
    """A referral partner with its partner-role login (a new one unless `user_row` is given)."""
    from portal.referrals.models import FeeBase, FeeKind, Partner

    n = next(_seq)
    user_row = user_row or user("partner", name=f"Partner Contact {n}")
    fields.setdefault("fee_kind", FeeKind.PERCENT)
    fields.setdefault("fee_basis_points", 1000)
    fields.setdefault("fee_base", FeeBase.SUBTOTAL)
    row = Partner(name=name or f"Partner {n}", email=user_row.email, user=user_row, **fields)
    db.session.add(row)
    db.session.commit()
    return row


def referral(partner_row, *, client_row=None, job_row=None, starts_on=None, **fields):
    """A referral of a client (a new one unless given) or of a single job, from `starts_on` (default long ago)."""
    from datetime import date

    from portal.referrals.models import Referral

    if job_row is None and client_row is None:
        client_row = client()
    row = Referral(partner=partner_row, client=client_row if job_row is None else None, job=job_row,
                   starts_on=starts_on or date(2020, 1, 1), **fields)
    db.session.add(row)
    db.session.commit()
    return row


def payout(partner_row, *, amount, fee_base_amount=None, amount_paid=None, status="paid", paid_on=None,
           amount_reversed=0, referral_row=None, job_row=None, **fields):
    """A payout ledger row on a paid job, as settlement would leave it (no Stripe involved)."""
    from portal.billing.models import BillingRecord, BillingStatus, RecordKind
    from portal.referrals.models import Payout, PayoutStatus

    referral_row = referral_row or referral(partner_row)
    job_row = job_row or job(referral_row.client or referral_row.job.client, items=[("Labor", "1", 10000)])
    amount_paid = amount_paid if amount_paid is not None else max(amount, 10000)
    record = job_row.live_billing_record
    if record is None:
        record = BillingRecord(job=job_row, kind=RecordKind.INVOICE, status=BillingStatus.PAID, live=True,
                               currency=job_row.currency, subtotal=amount_paid, total=amount_paid,
                               amount_paid=amount_paid, referral_id=referral_row.id)
        db.session.add(record)
    row = Payout(job=job_row, partner=partner_row, referral=referral_row, billing_record=record,
                 currency=partner_row.currency, amount_paid=amount_paid,
                 fee_base_amount=fee_base_amount if fee_base_amount is not None else amount_paid,
                 amount=amount, amount_reversed=amount_reversed, status=PayoutStatus(status),
                 paid_on=paid_on or utcnow(), **fields)
    db.session.add(row)
    db.session.commit()
    return row
