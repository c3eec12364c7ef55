"""The billing outbox: a closeout never depends on Redis, and the sweeper finds what Redis lost."""
from portal.billing.models import BillingTrigger, TriggerStatus
from portal.billing.services import sweep
from portal.extensions import db
from portal.queue import get_queue, is_queued
from tests import factories


def queued_trigger_ids():
    return [job.args[0] for job in get_queue().jobs if job.func_name.endswith("process_billing_trigger")]


def test_completion_enqueues_the_trigger_after_commit(app, login, crew):
    job = factories.job(crew=[crew], items=[("Labor", "1", 8500)])
    assert login(crew).post_form(f"/crew/jobs/{job.id}/complete").status_code == 303
    trigger = db.session.scalars(db.select(BillingTrigger)).one()
    assert queued_trigger_ids() == [trigger.id]
    assert is_queued(trigger.rq_job_id)
    assert sweep() == []  # queued and alive: nothing to do
    assert queued_trigger_ids() == [trigger.id]


def test_redis_down_at_closeout_still_completes_and_the_sweeper_enqueues_later(app, login, crew):
    job = factories.job(crew=[crew], items=[("Labor", "1", 8500)])
    working_url = app.config["REDIS_URL"]
    app.config["REDIS_URL"] = "redis://127.0.0.1:1/0"  # nothing listens there
    app.extensions.pop("closeout_redis", None)
    try:
        response = login(crew).post_form(f"/crew/jobs/{job.id}/complete")
    finally:
        app.config["REDIS_URL"] = working_url
        app.extensions.pop("closeout_redis", None)
    assert response.status_code == 303
    trigger = db.session.scalars(db.select(BillingTrigger)).one()
    assert trigger.status == TriggerStatus.PENDING
    assert queued_trigger_ids() == []

    swept = sweep()
    assert [row.id for row in swept] == [trigger.id]
    assert queued_trigger_ids() == [trigger.id]


def test_the_sweeper_replaces_a_job_that_redis_lost(app, login, crew):
    job = factories.job(crew=[crew], items=[("Labor", "1", 8500)])
    login(crew).post_form(f"/crew/jobs/{job.id}/complete")
    get_queue().empty()  # Redis lost everything (a flush, a failover without persistence)
    trigger = db.session.scalars(db.select(BillingTrigger)).one()
    first_job_id = trigger.rq_job_id
    assert [row.id for row in sweep()] == [trigger.id]
    db.session.refresh(trigger)
    assert trigger.rq_job_id != first_job_id and is_queued(trigger.rq_job_id)
    assert queued_trigger_ids() == [trigger.id]
