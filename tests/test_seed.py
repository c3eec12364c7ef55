"""`flask --app portal seed-demo`: demo people, clients for every billing policy, a price list, a day of jobs."""
from sqlalchemy import func, select

from portal.audit.models import AuditEntry
from portal.auth.models import Role, User
from portal.billing.models import BillingStatus, BillingTrigger, TriggerStatus
from portal.clients.models import Batching, BillingMode, Client, SendMode, Site
from portal.jobs.models import Job, JobLineItem, LineItemTemplate, Note, WorkStatus


RESERVED = ("example.com", "example.org", "example.net", "test", "invalid")  # RFC 2606: never anyone's inbox


def reserved_domain(email):
    domain = email.rpartition("@")[2].lower()
    return any(domain == name or domain.endswith("." + name) for name in RESERVED)


def row_counts(db):
    return {model.__name__: db.session.scalar(select(func.count()).select_from(model))
            for model in (User, Client, Site, LineItemTemplate, Job, JobLineItem, Note, BillingTrigger, AuditEntry)}


def test_seed_demo_builds_a_working_day_once(app, db):
    runner = app.test_cli_runner()
    first = runner.invoke(args=["seed-demo"])
    assert first.exit_code == 0, first.output
    assert "Seeded 8 clients" in first.output
    assert "owner@demo.closeout.test" in first.output and "closeout-demo" in first.output
    after_first = row_counts(db)

    second = runner.invoke(args=["seed-demo"])
    assert second.exit_code == 0, second.output
    assert "already seeded" in second.output
    assert "crew2@demo.closeout.test" in second.output
    assert row_counts(db) == after_first

    # Every role exists and signs in through the real form with the printed password.
    users = db.session.scalars(select(User).where(User.email.like("%@demo.closeout.test"))).all()
    assert sorted(user.role.value for user in users) == ["crew", "crew", "office", "owner", "partner"]
    for user in users:
        # A fresh app context per browser: the fixture's would carry one user's CSRF token into the next login.
        with app.app_context():
            response = app.test_client().post_form("/login", {"email": user.email, "password": "closeout-demo"})
        assert response.status_code == 302, user.email

    # Every billing policy the worker handles has a client, with sites and a reserved-domain email.
    clients = db.session.scalars(select(Client)).all()
    policies = {(client.billing_mode, client.send_mode, client.batching) for client in clients}
    assert {(BillingMode.INVOICE, SendMode.AUTO, Batching.PER_JOB), (BillingMode.INVOICE, SendMode.DRAFT, Batching.PER_JOB)} <= policies
    assert {client.billing_mode for client in clients} == set(BillingMode)
    assert {client.batching for client in clients} == set(Batching)
    assert any(client.allow_no_charge for client in clients) and any(client.tax_exempt for client in clients)
    for client in clients:
        assert 1 <= len(client.sites) <= 3
        assert client.billing_emails and all(reserved_domain(email) for email in client.billing_emails)

    templates = db.session.scalars(select(LineItemTemplate)).all()
    assert 8 <= len(templates) <= 12
    assert {template.taxable for template in templates} == {True, False}

    # A day of jobs in every work state, closed out through complete_job.
    jobs = db.session.scalars(select(Job)).all()
    assert {job.work_status for job in jobs} == set(WorkStatus)
    crew = [user for user in users if user.role == Role.CREW]
    for member in crew:
        assert any(job.work_status == WorkStatus.SCHEDULED and member in job.crew for job in jobs)
    in_progress = [job for job in jobs if job.work_status == WorkStatus.IN_PROGRESS]
    assert all(job.notes and job.line_items for job in in_progress)

    completed = [job for job in jobs if job.work_status == WorkStatus.COMPLETED]
    billable = [job for job in completed if job.line_items]
    assert {job.billing_status for job in billable} == {BillingStatus.PENDING, BillingStatus.READY_TO_BILL}
    for job in billable:
        assert [trigger.status for trigger in job.billing_triggers] == [TriggerStatus.PENDING]
        assert job.completed_by in job.crew
    no_charge = [job for job in completed if not job.line_items]
    assert len(no_charge) == 1
    assert no_charge[0].billing_status == BillingStatus.NO_CHARGE and no_charge[0].no_charge_reason
    assert no_charge[0].billing_triggers == []

    # The work left an audit trail, as if people had done it.
    actions = set(db.session.scalars(select(AuditEntry.action)))
    assert {"client.created", "job.created", "note.added", "line_item.added", "job.completed", "billing.triggered"} <= actions
