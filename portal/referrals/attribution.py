"""Which partner referred a job: the referral in force when it is billed (issue 6, "Partners and attribution")."""
from sqlalchemy import func, or_, select

from portal.extensions import db
from portal.referrals.models import Partner, Payout, PayoutStatus, Referral
from portal.timeutil import to_business_time, utcnow


def business_date(moment=None):
    """The business's calendar date at `moment` (default now)."""
    return to_business_time(moment or utcnow()).date()


def paid_jobs_count(referral, *, excluding_job_id=None):
    """How many paid jobs a referral has earned on: its payouts that were not cancelled."""
    query = select(func.count()).select_from(Payout).where(Payout.referral_id == referral.id,
                                                           Payout.status != PayoutStatus.CANCELLED)
    if excluding_job_id is not None:
        query = query.where(Payout.job_id != excluding_job_id)
    return db.session.scalar(query)


def has_room(referral, *, job_id=None):
    """Whether a referral capped at N paid jobs can still earn on one more (this job's own payout aside)."""
    if referral.max_paid_jobs is None:
        return True
    return paid_jobs_count(referral, excluding_job_id=job_id) < referral.max_paid_jobs


def referral_for_job(job, on=None):
    """The referral in force for `job` on `on` (business date, default today); the job's own beats its client's."""
    on = on or business_date()
    candidates = db.session.scalars(
        select(Referral).join(Partner, Partner.id == Referral.partner_id)
        .where(or_(Referral.job_id == job.id, Referral.client_id == job.client_id),
               Referral.starts_on <= on,
               or_(Referral.ends_on.is_(None), Referral.ends_on >= on),
               Referral.ended_at.is_(None),
               Partner.active.is_(True))
        # The job's own referral first, then the newest of the client's.
        .order_by(Referral.job_id.is_(None), Referral.starts_on.desc(), Referral.id.desc())
    ).all()
    for referral in candidates:
        if has_room(referral, job_id=job.id):
            return referral
    return None
