"""Reminders (issue 7, dunning): one email per policy step on the business's calendar, stopped by payment.

Emails go to a real SMTP server on loopback; "now" is advanced by passing it to the run.
"""
import html
import re
import threading
from datetime import datetime, time, timedelta, timezone

import pytest
from sqlalchemy import select

from portal.audit.models import AuditEntry
from portal.audit.services import Actor
from portal.billing.models import BillingBatch, BillingStatus, CustomerEmail, EmailKind
from portal.clients.models import Client
from portal.extensions import db as _db
from portal.payments.sync import Change, apply_change, lock_records
from portal.queue import get_queue
from portal.reminders.services import SEND_MANUAL_REMINDER, run_reminders, send_step, within_sending_hours
from portal.reminders.tasks import send_manual_reminder
from portal.timeutil import business_zone, utcnow
from tests import factories
from tests.fixtures.billing import PAY_URL, billed_record

OFFICE_EMAIL = "office@closeout.example"


@pytest.fixture(autouse=True)
def mail_settings(app):
    saved = {name: app.config.get(name) for name in
             ("OFFICE_EMAIL", "MAIL_FROM", "BUSINESS_NAME", "COPY_OFFICE_ON_BILLS", "BUSINESS_TIMEZONE")}
    app.config.update(OFFICE_EMAIL=OFFICE_EMAIL, MAIL_FROM="billing@closeout.example", BUSINESS_NAME="Bayport Plumbing",
                      COPY_OFFICE_ON_BILLS=False)
    yield
    app.config.update(saved)


def business_today():
    return utcnow().astimezone(business_zone()).date()


def at(day, hour=10, minute=0):
    """A moment on a business calendar day, as aware UTC."""
    return datetime.combine(day, time(hour, minute), tzinfo=business_zone()).astimezone(timezone.utc)


def due_on(billing_record, day, hour=17):
    """Make the bill due on this business day (at `hour`, business time)."""
    billing_record.due_at = at(day, hour)
    _db.session.commit()
    return day


def text_of(message):
    return message.get_body(("plain",)).get_content()


def html_of(message):
    return message.get_body(("html",)).get_content()


def reminder_rows(billing_record):
    return _db.session.scalars(select(CustomerEmail).where(CustomerEmail.record_id == billing_record.id,
                                                           CustomerEmail.kind == EmailKind.REMINDER)
                               .order_by(CustomerEmail.id)).all()


def audit(action):
    return _db.session.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)).all()


def pay(billing_record, when):
    """The bill is paid, through the same locked path a Stripe webhook takes."""
    (locked,) = lock_records(record_ids=[billing_record.id])
    apply_change(locked, Change(BillingStatus.PAID, at=when, amount_paid=locked.total), by=Actor.system("test"))
    _db.session.commit()


def run_days(smtp, due, offsets, *, hours=(9, 15)):
    """Run the reminders at several hours of each day `due + offset`; returns the offsets that sent an email."""
    sent = []
    for offset in offsets:
        for hour in hours:
            before = len(smtp.messages)
            run_reminders(at(due + timedelta(days=offset), hour))
            if len(smtp.messages) > before:
                sent.append(offset)
    return sent


@pytest.fixture
def smtp(smtp_server):
    return smtp_server


# --- The schedule -------------------------------------------------------------------------------------

def test_each_step_is_sent_once_on_its_day_and_never_before_or_after(db, smtp):
    client = factories.client(name="Harbor View", billing_emails=["ap@harbor.example"])
    assert client.reminder_offsets == [-3, 0, 7, 14] and client.reminder_limit == 4  # the default policy
    billed = billed_record(client, items=[("Labor", "2", 8500)], scope="Replace the kitchen faucet")
    due = due_on(billed.record, business_today() + timedelta(days=20))

    assert run_days(smtp, due, range(-6, 31)) == [-3, 0, 7, 14]

    assert len(smtp.messages) == 4
    assert [row.reminder_step for row in reminder_rows(billed.record)] == [-3, 0, 7, 14]
    assert all(row.sent_at is not None for row in reminder_rows(billed.record))
    number = billed.job.number
    due_text = f"{due:%b %d, %Y}".replace(" 0", " ")
    assert [message["Subject"] for message in smtp.messages] == [
        f"Reminder: Job {number}: $170.00 due by {due_text}",
        f"Reminder: Job {number}: $170.00 due today",
        f"Overdue: Job {number}: $170.00 due",
        f"Overdue: Job {number}: $170.00 due",
    ]
    week_late = smtp.messages[2]
    assert week_late["To"] == "ap@harbor.example" and week_late["Reply-To"] == OFFICE_EMAIL
    body = text_of(week_late)
    for expected in (f"Job {number}", "410 Pier Road, Bayport", "Replace the kitchen faucet", "Labor: $170.00",
                     f"was due on {due_text}, 7 days ago", "Amount due: $170.00", "(7 days overdue)", PAY_URL):
        assert expected in body, expected
    assert f'href="{PAY_URL}"' in html_of(week_late) and "7 days ago" in html_of(week_late)

    entries = audit("reminder.sent")
    assert [entry.detail["step"] for entry in entries] == [-3, 0, 7, 14]
    assert [entry.detail["days_overdue"] for entry in entries] == [0, 0, 7, 14]
    assert all(entry.job_id == billed.job.id and entry.detail["recipients"] == ["ap@harbor.example"]
               for entry in entries)


def test_the_limit_caps_the_reminders_of_a_bill(db, smtp):
    client = factories.client(reminder_offsets=[-3, 0, 7, 14], reminder_limit=2)
    billed = billed_record(client)
    due = due_on(billed.record, business_today() + timedelta(days=10))

    assert run_days(smtp, due, range(-4, 20)) == [-3, 0]


def test_steps_missed_while_the_cron_was_down_are_not_sent_in_a_burst(db, smtp):
    billed = billed_record(factories.client())
    due = due_on(billed.record, business_today() + timedelta(days=10))

    # Nothing ran from 3 days before due until 10 days after: only the current step (7) goes out.
    assert run_days(smtp, due, [10, 11, 12]) == [10]
    assert [row.reminder_step for row in reminder_rows(billed.record)] == [7]
    assert run_days(smtp, due, range(13, 20)) == [14]


def test_a_step_is_skipped_when_the_customer_got_the_bill_that_day(db, smtp):
    # Due on receipt: the bill email itself is the "due today" message, so step 0 is not sent too.
    client = factories.client(reminder_offsets=[0, 7])
    billed = billed_record(client)
    due = due_on(billed.record, business_today())

    assert run_days(smtp, due, [0, 1, 2]) == []
    assert run_days(smtp, due, range(3, 9)) == [7]


def test_the_step_day_is_the_business_day_not_the_utc_day(app, db, smtp):
    app.config["BUSINESS_TIMEZONE"] = "America/Los_Angeles"
    client = factories.client(reminder_offsets=[0])
    billed = billed_record(client)
    due = business_today() + timedelta(days=5)
    # 20:00 in Los Angeles is 04:00 or 03:00 UTC on the next calendar day.
    billed.record.due_at = at(due, 20)
    db.session.commit()
    assert billed.record.due_at.astimezone(timezone.utc).date() == due + timedelta(days=1)

    run_reminders(at(due - timedelta(days=1), 23, 30))  # already the due date in UTC, not yet in Los Angeles
    assert smtp.messages == []
    run_reminders(at(due, 9))  # 16:00 or 17:00 UTC, a day before the UTC due date
    assert len(smtp.messages) == 1 and smtp.messages[0]["Subject"].endswith("due today")
    # The hourly run waits for the morning in Los Angeles, not in UTC.
    assert not within_sending_hours(at(due, 7, 59)) and within_sending_hours(at(due, 8))


# --- Exactly once ---------------------------------------------------------------------------------------

def test_running_twice_at_the_same_moment_sends_one_email(db, smtp):
    billed = billed_record(factories.client())
    due = due_on(billed.record, business_today() + timedelta(days=10))
    now = at(due + timedelta(days=7))

    first = run_reminders(now)
    second = run_reminders(now)

    assert len(first.sent) == 1 and second.sent == []
    assert len(smtp.messages) == 1
    assert len(reminder_rows(billed.record)) == 1 and len(audit("reminder.sent")) == 1


def test_two_runs_at_once_on_postgresql_send_one_email_per_bill(app, db, smtp):
    bills = [billed_record(factories.client()) for _ in range(3)]
    due = business_today() + timedelta(days=10)
    for billed in bills:
        due_on(billed.record, due)
    now = at(due + timedelta(days=7))
    start = threading.Barrier(2)
    sent = []

    def run():
        with app.app_context():
            try:
                start.wait()
                sent.extend(run_reminders(now).sent)
            finally:
                _db.session.remove()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(record_id for record_id, _, _ in sent) == sorted(billed.record.id for billed in bills)
    assert len(smtp.messages) == 3
    assert sorted(message["To"] for message in smtp.messages) == sorted(
        billed.job.client.billing_emails[0] for billed in bills)
    for billed in bills:
        assert [row.reminder_step for row in reminder_rows(billed.record)] == [7]


def test_mail_server_down_then_up_sends_the_step_once(db, smtp):
    billed = billed_record(factories.client())
    due = due_on(billed.record, business_today() + timedelta(days=10))
    smtp.stop()

    summary = run_reminders(at(due, 9))

    assert summary.sent == [] and len(summary.failed) == 1
    assert reminder_rows(billed.record) == []  # the server never took it: the claim is released for the next run
    assert len(audit("email.failed")) == 1
    smtp.start()
    assert run_days(smtp, due, [0, 0, 1]) == [0]


def test_a_bounced_reminder_pauses_the_client_instead_of_bouncing_every_hour(db, smtp):
    from portal.reminders.services import set_reminder_policy

    client_row = factories.client(billing_emails=["gone@harbor.example"])
    billed = billed_record(client_row)
    due = due_on(billed.record, business_today() + timedelta(days=10))
    smtp.refuse.add("gone@harbor.example")

    summary = run_reminders(at(due, 9))
    assert summary.sent == [] and "Reminders paused for" in summary.failed[0][1]
    assert db.session.get(type(client_row), client_row.id).reminders_paused
    assert len(audit("email.failed")) == 1 and len(audit("reminder.paused")) == 1
    assert run_days(smtp, due, [0, 1, 7]) == [] and len(audit("email.failed")) == 1  # no retry every hour

    client_row.billing_emails = ["ap@harbor.example"]  # the office fixes the address and resumes
    set_reminder_policy(client_row, by=factories.system(), paused=False)
    db.session.commit()
    assert run_days(smtp, due, [7, 8]) == [7]  # the step due that day goes out once
    assert smtp.envelopes[-1][1] == ["ap@harbor.example"]


# --- What stops reminders ---------------------------------------------------------------------------------

def test_payment_stops_the_reminders(db, smtp):
    billed = billed_record(factories.client())
    due = due_on(billed.record, business_today() + timedelta(days=10))
    assert run_days(smtp, due, range(-3, 2)) == [-3, 0]

    pay(billed.record, at(due + timedelta(days=2)))

    assert run_days(smtp, due, range(2, 30)) == []
    assert len(smtp.messages) == 2


def test_a_bill_paid_after_the_run_looked_gets_nothing(db, smtp):
    # The run picked the bill, then the payment landed before its turn: the re-check under the lock stops it.
    billed = billed_record(factories.client())
    due = due_on(billed.record, business_today() + timedelta(days=10))
    pay(billed.record, at(due))

    assert send_step(billed.record.id, 7, due + timedelta(days=7), by=Actor.system("test")) is None
    assert smtp.messages == [] and reminder_rows(billed.record) == []


@pytest.mark.parametrize("status", [BillingStatus.PROCESSING, BillingStatus.VOID, BillingStatus.DISPUTED,
                                    BillingStatus.DRAFT, BillingStatus.REFUNDED])
def test_bills_with_nothing_to_collect_get_no_reminder(db, smtp, status):
    billed = billed_record(factories.client(), status=status)
    due = due_on(billed.record, business_today() + timedelta(days=10))

    assert run_days(smtp, due, [0, 7, 14]) == []


def test_a_paused_client_gets_nothing_until_resumed(db, smtp):
    client = factories.client(reminders_paused=True)
    billed = billed_record(client)
    due = due_on(billed.record, business_today() + timedelta(days=10))

    assert run_days(smtp, due, range(-3, 5)) == []

    client.reminders_paused = False
    db.session.commit()
    # Resumed on day 5: the step that came while paused (the due date) goes out once, then the schedule goes on.
    assert run_days(smtp, due, range(5, 9)) == [5, 7]
    assert [row.reminder_step for row in reminder_rows(billed.record)] == [0, 7]
    assert "5 days ago" in text_of(smtp.messages[0])


def test_a_batch_invoice_gets_one_reminder_listing_its_jobs(db, smtp):
    client = factories.client(billing_emails=["payables@northgate.example"], batching="weekly")
    first = billed_record(client, items=[("Labor", "1", 8500)])
    second = billed_record(client, items=[("Parts", "2", 1250)])
    batch = BillingBatch(client=client, period_key="2026-W48")
    db.session.add(batch)
    due = business_today() + timedelta(days=10)
    for billed in (first, second):
        billed.record.batch = batch
        billed.record.stripe_invoice_id = "in_batch"
        billed.record.due_at = at(due, 17)
    db.session.commit()

    assert run_days(smtp, due, [7, 8]) == [7]

    (message,) = smtp.messages
    assert message["Subject"] == f"Overdue: Jobs {first.job.number}, {second.job.number}: $110.00 due"
    body = text_of(message)
    assert f"Job {first.job.number}" in body and f"Job {second.job.number}" in body
    assert "Amount due: $110.00" in body
    assert len(reminder_rows(first.record)) == 1 and reminder_rows(second.record) == []


# --- The office: by hand, on the job page, and the client's policy ---------------------------------------------

def page_text(browser, url):
    """The page as a person reads it: no tags, single spaces."""
    body = browser.get(url).get_data(as_text=True)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split()).replace("( ", "(").replace(" )", ")")


def billing_component(response):
    body = response.get_data(as_text=True)
    assert response.status_code == 200, body[:500]
    return html.unescape(body)


def test_office_sends_a_reminder_by_hand_and_sees_it_on_the_job(db, login, office, smtp):
    client = factories.client(billing_emails=["ap@harbor.example"], reminders_paused=True)
    billed = billed_record(client)
    browser = login(office)
    url = f"/office/jobs/{billed.job.id}/billing/remind"

    body = billing_component(browser.htmx("POST", url, headers={"HX-Target": "billing"}))
    assert "A reminder with the pay link is on its way to the customer." in body

    queued = [task.args for task in get_queue().jobs if task.func_name == SEND_MANUAL_REMINDER]
    assert queued == [(billed.record.id, "Olive Office (office)")]
    send_manual_reminder(*queued[0])  # what the worker runs

    (message,) = smtp.messages
    assert message["To"] == "ap@harbor.example" and PAY_URL in text_of(message)
    (requested,) = audit("reminder.requested")
    assert requested.actor_label == "Olive Office (office)" and requested.job_id == billed.job.id
    (sent,) = audit("reminder.sent")
    assert sent.actor_label == "Olive Office (office)" and sent.detail["step"] is None
    page = page_text(browser, f"/office/jobs/{billed.job.id}")
    assert "Reminder (sent by hand) sent" in page and "to ap@harbor.example" in page
    assert f"Reminders Paused for {client.name}." in page

    # An automatic step is listed with its step.
    due = due_on(billed.record, business_today() + timedelta(days=10))
    client.reminders_paused = False
    db.session.commit()
    run_reminders(at(due + timedelta(days=7)))
    assert "Reminder (7 days after due) sent" in page_text(browser, f"/office/jobs/{billed.job.id}")


def test_the_job_page_says_when_the_next_reminder_goes(db, login, office, smtp):
    billed = billed_record(factories.client(reminder_offsets=[-3, 7], reminder_limit=1))
    due = due_on(billed.record, business_today() + timedelta(days=10))
    browser = login(office)
    url = f"/office/jobs/{billed.job.id}"
    seven_days = f"{due - timedelta(days=3):%b %d, %Y}".replace(" 0", " ")

    assert f"Reminders Next {seven_days} (3 days before due)." in page_text(browser, url)
    billed.record.due_at = at(business_today() + timedelta(days=3))
    billed.record.created_at = utcnow() - timedelta(days=20)  # billed weeks ago: today's step is not its first day
    db.session.commit()
    assert "Reminders Next today (3 days before due)." in page_text(browser, url)
    run_reminders(at(business_today(), 23))
    assert "Reminders All 1 sent." in page_text(browser, url)


def test_a_reminder_by_hand_is_refused_for_a_paid_bill(db, login, office, smtp):
    billed = billed_record(factories.client(), status=BillingStatus.PAID)
    browser = login(office)

    body = billing_component(browser.htmx("POST", f"/office/jobs/{billed.job.id}/billing/remind",
                                          headers={"HX-Target": "billing"}))

    assert "Only a sent bill that is still unpaid can get a reminder." in body
    assert "Send a reminder" not in body
    assert [task for task in get_queue().jobs if task.func_name == SEND_MANUAL_REMINDER] == []


def test_a_reminder_by_hand_for_a_bill_paid_meanwhile_is_not_sent(db, smtp):
    billed = billed_record(factories.client())
    pay(billed.record, utcnow())

    assert send_manual_reminder(billed.record.id, "Olive Office (office)") is None
    assert smtp.messages == [] and len(audit("reminder.skipped")) == 1


def client_form(client, **changes):
    data = {"name": client.name, "billing_emails": "\n".join(client.billing_emails), "phone": client.phone,
            "address": client.address, "billing_mode": client.billing_mode.value,
            "send_mode": client.send_mode.value, "days_until_due": str(client.days_until_due),
            "batching": client.batching.value, "currency": client.currency,
            "reminder_offsets": "-3, 0, 7, 14", "reminder_limit": "4"}
    data.update(changes)
    return {name: value for name, value in data.items() if value is not None}


def test_office_edits_the_reminder_policy_with_clear_errors(db, login, office):
    client = factories.client(name="Harbor View")
    browser = login(office)
    url = f"/office/clients/{client.id}/edit"

    form_page = html.unescape(browser.get(url).get_data(as_text=True))
    assert 'value="-3, 0, 7, 14"' in form_page and "Pause automatic reminders" in form_page

    response = browser.post_form(url, client_form(client, reminder_offsets="-3, soon, 7"))
    assert response.status_code == 422
    assert "“soon” is not a whole number of days." in html.unescape(response.get_data(as_text=True))
    response = browser.post_form(url, client_form(client, reminder_offsets="-90"))
    assert response.status_code == 422 and "Reminder days must be from -60" in response.get_data(as_text=True)
    response = browser.post_form(url, client_form(client, reminder_offsets=" "))
    assert response.status_code == 422
    assert "Add at least one reminder day, or pause reminders." in response.get_data(as_text=True)
    response = browser.post_form(url, client_form(client, reminder_limit="0"))
    assert response.status_code == 422 and "From 1 to 10" in response.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Client, client.id).reminder_offsets == [-3, 0, 7, 14]

    response = browser.post_form(url, client_form(client, reminder_offsets="14, -5 , 0, 0", reminder_limit="2",
                                                  reminders_paused="y"))
    assert response.status_code == 302
    db.session.expire_all()
    saved = db.session.get(Client, client.id)
    assert (saved.reminder_offsets, saved.reminder_limit, saved.reminders_paused) == ([-5, 0, 14], 2, True)
    changes = {entry.field: (entry.old_value, entry.new_value) for entry in audit("client.updated")}
    assert changes == {"reminder_offsets": ("-3, 0, 7, 14", "-5, 0, 14"), "reminder_limit": ("4", "2"),
                       "reminders_paused": ("False", "True")}
    page = html.unescape(browser.get(f"/office/clients/{client.id}").get_data(as_text=True))
    assert "Paused: no automatic reminders." in page and "Resume reminders" in page


def test_office_pauses_and_resumes_a_clients_reminders(db, login, office):
    client = factories.client()
    browser = login(office)
    url = f"/office/clients/{client.id}/reminders"
    page = html.unescape(browser.get(f"/office/clients/{client.id}").get_data(as_text=True))
    assert "3 days before due, on the due date, 7 days after due, 14 days after due; at most 4 per bill." in page

    body = html.unescape(browser.htmx("POST", url, {"paused": "yes"}).get_data(as_text=True))
    assert body.lstrip().startswith('<section id="reminder-policy"')
    assert "Automatic reminders paused." in body and "Resume reminders" in body
    db.session.expire_all()
    assert db.session.get(Client, client.id).reminders_paused is True

    response = browser.post_form(url, {"paused": "no"})  # a plain form: back to the client page
    assert response.status_code == 303
    db.session.expire_all()
    assert db.session.get(Client, client.id).reminders_paused is False
    assert [(entry.field, entry.new_value, entry.actor_label) for entry in audit("client.updated")] == [
        ("reminders_paused", "True", "Olive Office (office)"), ("reminders_paused", "False", "Olive Office (office)")]


def test_dry_run_lists_without_sending(app, db, smtp):
    billed = billed_record(factories.client())
    due_on(billed.record, business_today() - timedelta(days=7))  # a week overdue today
    billed.record.created_at = utcnow() - timedelta(days=40)
    db.session.commit()

    output = app.test_cli_runner().invoke(args=["reminders", "run", "--dry-run"]).output

    assert f"Would send reminder 7 days after due for {billed.job.number}" in output
    assert smtp.messages == [] and reminder_rows(billed.record) == []
    output = app.test_cli_runner().invoke(args=["reminders", "run"]).output
    assert "1 reminder(s) sent" in output and len(smtp.messages) == 1
