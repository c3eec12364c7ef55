"""A large book of past work for the dashboard and its benchmark: `flask --app portal seed-demo --jobs 100000`.

Rows are written with bulk Core inserts (thousands per statement), not one ORM object at a time,
so 100k jobs take well under the minutes a service-by-service seed would. The jobs spread over
the past year; each completed one has a line item, a crew member, a billing record whose status
follows its own timeline (sent after a lag, due 30 days later, paid, or overdue by now), a few
refunds, disputes and failures, referral payouts for one client's paid jobs, and an audit entry.
"""
import random
from datetime import timedelta

from sqlalchemy import func, insert, select, text

from portal.audit.models import AuditEntry, Source
from portal.auth.models import Role, User
from portal.billing.models import BillingRecord, BillingStatus as S, RecordKind
from portal.clients.models import Client
from portal.extensions import db
from portal.jobs.models import Job, JobLineItem, WorkStatus, job_assignments
from portal.referrals.models import Partner, Payout, PayoutStatus, Referral
from portal.timeutil import utcnow

CHUNK = 5000
HISTORY_DAYS = 365
DAYS_UNTIL_DUE = 30
FEE_BASIS_POINTS = 1000  # the bulk partner's 10 %


def seed_book(jobs, *, seed=7, now=None):
    """Add `jobs` past jobs with their billing in bulk; returns how many billing records were written."""
    now = now or utcnow()
    rng = random.Random(seed)
    clients = db.session.scalars(select(Client.id).order_by(Client.id)).all()
    crew = db.session.scalars(select(User.id).where(User.role == Role.CREW).order_by(User.id)).all()
    if not clients or not crew:
        raise ValueError("seed the demo first: the book needs clients and crew")
    referral = bulk_referral(clients[0])
    first_id = (db.session.scalar(select(func.max(Job.id))) or 0) + 1
    written = 0
    for start in range(0, jobs, CHUNK):
        ids = range(first_id + start, first_id + min(start + CHUNK, jobs))
        written += write_chunk([plan_job(job_id, rng, now, clients, crew) for job_id in ids], referral)
    restart_sequence("jobs")
    db.session.commit()
    return written


def bulk_referral(client_id):
    """A partner and a referral for the first client, so paid jobs there earn fees."""
    partner = Partner(name="Bayport Realty (bulk demo)", email="referrals@bayport-realty.example.com")
    starts_on = (utcnow() - timedelta(days=HISTORY_DAYS)).date()
    referral = Referral(partner=partner, client_id=client_id, starts_on=starts_on)
    db.session.add_all([partner, referral])
    db.session.flush()
    return referral


# Every row of one executemany must name the same columns.
RECORD_DEFAULTS = {"sent_at": None, "due_at": None, "paid_at": None, "refunded_at": None, "disputed_at": None,
                   "invoice_number": None, "amount_paid": 0, "amount_refunded": 0}


def plan_job(job_id, rng, now, clients, crew):
    """One job's rows as dicts: where its work and its money stand, on a timeline ending now."""
    completed_at = now - timedelta(days=rng.uniform(0, HISTORY_DAYS))
    total = rng.randrange(50, 1500) * 100 + rng.choice((0, 50, 95))
    plan = {"job": {"completed_at": None, "id": job_id, "number": f"J-{job_id:05d}", "client_id": rng.choice(clients),
                    "scope": "Service visit", "currency": "usd", "lines_total": total,
                    "created_at": completed_at - timedelta(days=3), "scheduled_start": completed_at - timedelta(hours=2)},
            "crew": rng.choice(crew), "total": total, "record": None}
    roll = rng.random()
    if roll < 0.04:  # booked, not done yet
        plan["job"].update(scheduled_start=now + timedelta(days=rng.uniform(0, 14)), work_status=WorkStatus.SCHEDULED,
                           billing_status=S.NOT_BILLED, updated_at=now)
        return plan
    plan["job"].update(work_status=WorkStatus.COMPLETED, completed_at=completed_at)
    sent_at = completed_at + timedelta(hours=rng.expovariate(1 / 30))
    record = {"job_id": job_id, "kind": RecordKind.INVOICE, "live": True, "currency": "usd", "subtotal": total,
              "total": total, "created_at": completed_at, "work_completed_at": completed_at, "auto_send": True}
    if roll < 0.06 or sent_at > now:
        status, record = (S.FAILED, None) if roll < 0.05 else (S.DRAFT, {**record, "status": S.DRAFT})
    else:
        due_at = sent_at + timedelta(days=DAYS_UNTIL_DUE)
        paid_at = sent_at + timedelta(days=rng.expovariate(1 / 20))
        record.update(sent_at=sent_at, due_at=due_at, invoice_number=f"BULK-{job_id:06d}")
        if roll < 0.08:
            status = S.PAYMENT_FAILED
        elif roll < 0.15 or paid_at > now:
            status = S.OVERDUE if due_at < now else S.SENT
        else:
            status = S.PAID
            record.update(paid_at=paid_at, amount_paid=total)
            if roll > 0.985:
                status = S.REFUNDED if roll > 0.993 else S.PARTIALLY_REFUNDED
                refund = total if status == S.REFUNDED else total // 4
                record.update(refunded_at=paid_at + timedelta(days=2), amount_refunded=refund)
            elif roll > 0.98:
                status = S.DISPUTED
                record.update(disputed_at=paid_at + timedelta(days=5))
        record["status"] = status
    last_change = (record or {}).get("paid_at") or (record or {}).get("sent_at") or completed_at
    plan["job"].update(billing_status=status, updated_at=last_change)
    plan["record"] = None if record is None else {**RECORD_DEFAULTS, **record}
    return plan


def write_chunk(plans, referral):
    """One bulk insert per table for these jobs (Core: batched multi-row VALUES); returns the records written."""
    db.session.execute(insert(Job.__table__), [plan["job"] for plan in plans])
    db.session.execute(insert(job_assignments), [{"job_id": p["job"]["id"], "user_id": p["crew"]} for p in plans])
    db.session.execute(insert(JobLineItem.__table__), [
        {"job_id": p["job"]["id"], "description": "Labor, technician", "unit": "each", "quantity": 1,
         "unit_amount": p["total"], "amount": p["total"], "created_at": p["job"]["created_at"]} for p in plans])
    records = [p["record"] for p in plans if p["record"] is not None]
    paid = {}
    if records:
        table = BillingRecord.__table__
        rows = db.session.execute(insert(table).returning(table.c.id, table.c.job_id, sort_by_parameter_order=True),
                                  records)
        by_job = {p["job"]["id"]: p for p in plans}
        for record_id, job_id in rows:
            plan = by_job[job_id]
            if plan["job"]["client_id"] == referral.client_id and plan["record"].get("paid_at"):
                paid[record_id] = plan
    if paid:
        db.session.execute(insert(Payout.__table__),
                           [payout_row(record_id, plan, referral) for record_id, plan in paid.items()])
    db.session.execute(insert(AuditEntry.__table__), [
        {"created_at": p["job"]["updated_at"], "source": Source.SYSTEM, "actor_label": "demo book",
         "entity_type": "job", "entity_id": p["job"]["id"], "job_id": p["job"]["id"], "action": "demo.seeded",
         "field": "billing_status", "new_value": p["job"]["billing_status"].value} for p in plans])
    return len(records)


def payout_row(record_id, plan, referral):
    record = plan["record"]
    fee = record["amount_paid"] * FEE_BASIS_POINTS // 10_000
    transferred = record["paid_at"] + timedelta(days=1)
    done = transferred < utcnow()
    return {"job_id": plan["job"]["id"], "partner_id": referral.partner_id, "referral_id": referral.id,
            "billing_record_id": record_id, "currency": "usd", "amount_paid": record["amount_paid"],
            "fee_base_amount": record["amount_paid"], "amount": fee, "amount_reversed": 0,
            "rule": {"kind": "percent", "basis_points": FEE_BASIS_POINTS},
            "status": PayoutStatus.PAID if done else PayoutStatus.PENDING, "paid_on": record["paid_at"],
            "transferred_at": transferred if done else None}


def restart_sequence(table):
    """Ids were given explicitly (job numbers derive from them): move PostgreSQL's sequence past them."""
    if db.engine.dialect.name == "postgresql":
        db.session.execute(text(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"))
