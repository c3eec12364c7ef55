"""Attribution (issue 6): which partner a job is referred by, and that the job knows it when it is billed."""
from datetime import datetime, timedelta, timezone

from portal.billing import pipeline
from portal.billing.models import BillingStatus
from portal.billing.services import open_batch
from portal.extensions import db
from portal.jobs.services import complete_job
from portal.referrals.attribution import business_date, referral_for_job
from portal.referrals.models import PayoutStatus
from portal.referrals.settlement import settle_referral_fee
from portal.timeutil import utcnow
from tests import factories
from tests.fixtures.billing import billed_record
from tests.fixtures.referrals import partner_row, referral_row


def test_a_job_referral_beats_its_clients(app):
    client_row = factories.client()
    job = factories.job(client_row)
    client_partner, job_partner = partner_row("Client Partner"), partner_row("Job Partner")
    referral_row(client_partner, client=client_row)
    job_referral = referral_row(job_partner, job=job)
    assert referral_for_job(job) == job_referral
    other_job = factories.job(client_row)
    assert referral_for_job(other_job).partner == client_partner


def test_the_date_window_is_inclusive_and_in_the_business_calendar(app):
    client_row = factories.client()
    job = factories.job(client_row)
    referral = referral_row(partner_row(), client=client_row, starts_in_days=0, ends_in_days=0)
    today = business_date()
    assert referral_for_job(job, on=today) == referral  # starts_on and ends_on are both days it counts
    assert referral_for_job(job, on=today - timedelta(days=1)) is None
    assert referral_for_job(job, on=today + timedelta(days=1)) is None

    # 03:00 UTC on the 27th is still the 26th in New York: "today" is the business's date, not UTC's.
    app.config["BUSINESS_TIMEZONE"] = "America/New_York"
    try:
        assert str(business_date(datetime(2026, 11, 27, 3, 0, tzinfo=timezone.utc))) == "2026-11-26"
    finally:
        app.config["BUSINESS_TIMEZONE"] = "UTC"


def test_a_referral_ended_by_hand_or_of_an_inactive_partner_is_not_in_force(app):
    client_row = factories.client()
    job = factories.job(client_row)
    ended = referral_row(partner_row("Ended"), client=client_row)
    ended.ended_at = utcnow()
    inactive = partner_row("Inactive")
    inactive.active = False
    referral_row(inactive, client=client_row)
    db.session.commit()
    assert referral_for_job(job) is None


def test_max_paid_jobs_counts_payouts_that_were_not_cancelled(app):
    client_row = factories.client()
    partner = partner_row()
    referral = referral_row(partner, client=client_row, max_paid_jobs=1)
    first = billed_record(client_row, status=BillingStatus.PAID)
    first.record.referral = referral
    first.record.amount_paid = first.record.total
    payout = settle_referral_fee(first.record, event_id="evt_first")
    db.session.commit()
    assert payout.status == PayoutStatus.HELD_NO_ACCOUNT  # no connected account yet

    second_job = factories.job(client_row)
    assert referral_for_job(second_job) is None, "one paid job used the referral up"
    assert referral_for_job(first.job) == referral, "the job that earned still counts as referred"
    payout.status = PayoutStatus.CANCELLED
    db.session.commit()
    assert referral_for_job(second_job) == referral, "a cancelled payout does not use it up"


def test_the_billing_pipeline_records_the_referral_on_the_billing_record(app):
    client_row = factories.client()
    referral = referral_row(partner_row(), client=client_row)
    job = factories.job(client_row, items=[("Labor", "1", 8500)])
    complete_job(job, by=factories.system())
    db.session.commit()
    billing_record = pipeline.open_record(job.billing_triggers[-1])
    assert billing_record.referral_id == referral.id

    unreferred = factories.job(factories.client(), items=[("Labor", "1", 8500)])
    complete_job(unreferred, by=factories.system())
    db.session.commit()
    assert pipeline.open_record(unreferred.billing_triggers[-1]).referral_id is None


def test_a_batch_records_each_jobs_referral(app):
    client_row = factories.client()
    referral = referral_row(partner_row(), client=client_row)
    jobs = [factories.job(client_row, items=[("Labor", "1", 8500)]) for _ in range(2)]
    job_partner_referral = referral_row(partner_row("Job Partner"), job=jobs[1])
    batch = open_batch(client_row, jobs, "manual-1", by=factories.system())
    db.session.commit()
    assert [r.referral_id for r in batch.records] == [referral.id, job_partner_referral.id]
