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
