"""Completing a job: the rules, and the billing trigger recorded in the same transaction."""
import pytest

from portal.audit.models import AuditEntry
from portal.audit.services import Actor
from portal.billing.models import BillingStatus, BillingTrigger, TriggerStatus
from portal.errors import TransitionNotAllowed, Unprocessable
from portal.jobs.models import WorkStatus
from portal.jobs.services import complete_job, reopen_job
from tests import factories


def test_completion_records_who_when_and_one_trigger(db, crew):
    job = factories.job(crew=[crew], items=[("Labor", "2.5", 8500), ("Parts", "3", 3333)])
    complete_job(job, by=Actor.for_user(crew))
    db.session.commit()

    assert job.work_status == WorkStatus.COMPLETED
    assert job.completed_by == crew and job.completed_at is not None
    assert job.billing_status == BillingStatus.PENDING
    assert job.totals.total == 21250 + 9999
    triggers = db.session.scalars(db.select(BillingTrigger).where(BillingTrigger.job_id == job.id)).all()
    assert [t.status for t in triggers] == [TriggerStatus.PENDING]
    actions = db.session.scalars(db.select(AuditEntry.action).where(AuditEntry.job_id == job.id)).all()
    assert "job.completed" in actions and "billing.triggered" in actions


def test_completing_twice_is_refused(db, crew):
    job = factories.job(crew=[crew], items=[("Labor", "1", 8500)])
    complete_job(job, by=Actor.for_user(crew))
    db.session.commit()
    with pytest.raises(TransitionNotAllowed):
        complete_job(job, by=Actor.for_user(crew))
    db.session.rollback()
    assert db.session.query(BillingTrigger).count() == 1


def test_no_line_items_needs_a_no_charge_policy(db, crew):
    job = factories.job(crew=[crew])
    with pytest.raises(Unprocessable):
        complete_job(job, by=Actor.for_user(crew))
    db.session.rollback()
    assert job.work_status == WorkStatus.SCHEDULED

    free = factories.job(factories.client(allow_no_charge=True), crew=[crew])
    complete_job(free, by=Actor.for_user(crew))
    db.session.commit()
    assert free.billing_status == BillingStatus.NO_CHARGE
    assert db.session.query(BillingTrigger).count() == 0


def test_batched_clients_wait_as_ready_to_bill(db, crew):
    job = factories.job(factories.client(batching="weekly"), crew=[crew], items=[("Labor", "1", 8500)])
    complete_job(job, by=Actor.for_user(crew))
    db.session.commit()
    assert job.billing_status == BillingStatus.READY_TO_BILL


def test_reopen_needs_a_reason_and_cancels_the_pending_trigger(db, crew, office):
    job = factories.job(crew=[crew], items=[("Labor", "1", 8500)])
    complete_job(job, by=Actor.for_user(crew))
    db.session.commit()
    with pytest.raises(Exception):
        reopen_job(job, by=Actor.for_user(office), reason="  ")
    db.session.rollback()

    reopen_job(job, by=Actor.for_user(office), reason="Customer says the tap still drips")
    db.session.commit()
    assert job.work_status == WorkStatus.IN_PROGRESS
    assert job.billing_status == BillingStatus.NOT_BILLED
    assert [t.status for t in job.billing_triggers] == [TriggerStatus.CANCELLED]
    complete_job(job, by=Actor.for_user(crew))
    db.session.commit()
    assert [t.status for t in job.billing_triggers] == [TriggerStatus.CANCELLED, TriggerStatus.PENDING]
