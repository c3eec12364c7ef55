"""Reconciliation: catch up on events Stripe could not deliver, then repair drift in open bills.

Two passes (issue 5, §4). Events: everything since the watermark, plus those Stripe lists as
undelivered, stored through the receiver's path and processed at once. Open items: the events
API reaches back only 30 days, so every open invoice and payment link is re-read as well.
Every repair is audited with the source "reconcile".
"""
import json
import traceback
from dataclasses import dataclass, field

from sqlalchemy import select

from portal.audit.models import Source
from portal.audit.services import Actor
from portal.billing import stripe_gateway as gateway
from portal.billing.models import BillingRecord, BillingStatus
from portal.extensions import db
from portal.payments.handlers import HANDLED_EVENTS
from portal.payments.models import EventStatus
from portal.payments.services import note_failure, process_event, store_event, sync_state
from portal.payments.sync import (Verdict, apply_change, current_invoice_change, current_link_change,
                                  fill_amount_paid, lock_records)
from portal.timeutil import utcnow

RECONCILE = Actor(Source.RECONCILE, "reconcile", "reconcile")
OPEN = (BillingStatus.DRAFT, BillingStatus.SENT, BillingStatus.PROCESSING, BillingStatus.PAYMENT_FAILED,
        BillingStatus.OVERDUE)


@dataclass
class Report:
    """What a reconcile run found and fixed, for the command's output."""

    events_recovered: list = field(default_factory=list)  # (stripe event id, type, resulting status)
    repairs: list = field(default_factory=list)  # (job number, old status, new status)
    accounts: list = field(default_factory=list)  # (partner name, old account status, new)
    accounts_unread: list = field(default_factory=list)  # (partner name, why Stripe could not be read)

    def lines(self):
        for event_id, event_type, status in self.events_recovered:
            yield f"event {event_id} ({event_type}) was missing: {status}"
        for job_number, old, new in self.repairs:
            yield f"job {job_number}: {old} → {new} (Stripe's current state)"
        for partner_name, old, new in self.accounts:
            yield f"partner {partner_name}: payouts account {old} → {new} (Stripe's current state)"
        for partner_name, error in self.accounts_unread:
            yield f"partner {partner_name}: payouts account not read ({error})"
        yield (f"{len(self.events_recovered)} missed event(s) processed, {len(self.repairs)} bill(s) repaired, "
               f"{len(self.accounts)} partner account(s) updated.")

    def summary(self):
        return {"events": [e[0] for e in self.events_recovered], "repairs": len(self.repairs)}


def reconcile():
    """Both passes; commits as it goes and returns the Report."""
    report = Report()
    recover_missed_events(report)
    repair_open_items(report)
    refresh_partner_accounts(report)
    state = sync_state()
    state.last_reconciled_at = utcnow()
    db.session.commit()
    return report


def recover_missed_events(report):
    state = sync_state()
    watermark = state.events_watermark
    db.session.commit()
    seen, newest = {}, watermark or 0
    for event in gateway.list_events(created_after=watermark, types=HANDLED_EVENTS):
        seen[event.id] = event
        newest = max(newest, event.created)
    for event in gateway.list_events(types=HANDLED_EVENTS, delivery_success=False):
        seen.setdefault(event.id, event)
    # Oldest first, so precedence sees them in the order Stripe made them.
    for event in sorted(seen.values(), key=lambda e: (e.created, e.id)):
        # Stripe sends decimal fields as strings; the SDK hands them back as Decimal.
        payload = json.loads(json.dumps(event.to_dict(), default=str))
        row_id = store_event(event.id, event.type, event.created, payload, received_via="reconcile")
        db.session.commit()
        if row_id is None:
            continue  # the receiver has it; the worker owns it
        try:
            status = process_event(row_id, source=Source.RECONCILE)
        except Exception as error:  # kept on the event (Webhook issues page, alert); the run goes on
            note_failure(row_id, error, traceback.format_exc(), final=True)
            status = EventStatus.FAILED
        report.events_recovered.append((event.id, event.type, status.value))
    state = sync_state()
    # Events created in the same second as the newest may still arrive; the id check makes re-reading them harmless.
    state.events_watermark = max(newest - 1, 0) if newest else watermark
    db.session.commit()


def repair_open_items(report):
    records = db.session.scalars(select(BillingRecord).where(BillingRecord.live, BillingRecord.status.in_(OPEN))
                                 .order_by(BillingRecord.id)).all()
    done_invoices = set()
    for candidate in records:
        if candidate.stripe_invoice_id:
            if candidate.stripe_invoice_id in done_invoices:
                continue
            done_invoices.add(candidate.stripe_invoice_id)
            locked = lock_records(invoice_id=candidate.stripe_invoice_id)
            change = current_invoice_change(candidate.stripe_invoice_id, locked, at=utcnow())
        elif candidate.stripe_payment_link_id:
            locked = lock_records(link_id=candidate.stripe_payment_link_id)
            change = current_link_change(candidate.stripe_payment_link_id, at=utcnow())
        else:
            continue
        for billing_record in locked:
            old = billing_record.status
            if change is not None and apply_change(billing_record, change, by=RECONCILE,
                                                   note_ignored=False) == Verdict.APPLY:
                fill_amount_paid(billing_record)
                if billing_record.status == BillingStatus.PAID:
                    from portal.payments.services import on_payment_confirmed

                    on_payment_confirmed(billing_record, event_id="reconcile")
                report.repairs.append((billing_record.job.number, old.value, billing_record.status.value))
        db.session.commit()


def refresh_partner_accounts(report):
    """Re-read every partner's connected account: a Connect event Stripe could not deliver is not in the
    platform's event list, so this is how a missed "onboarding finished" (or "restricted") is caught."""
    from portal.referrals.models import Partner
    from portal.referrals.settlement import refresh_account

    partners = db.session.scalars(select(Partner).where(Partner.stripe_account_id.is_not(None))
                                  .order_by(Partner.id)).all()
    for partner in partners:
        old = partner.account_status
        try:
            refresh_account(partner, by=RECONCILE)
        except (gateway.StripeUnavailable, gateway.StripeRefused) as error:  # the next run reads it again
            db.session.rollback()
            report.accounts_unread.append((partner.name, str(error)))
            continue
        if partner.account_status != old:
            report.accounts.append((partner.name, old.value, partner.account_status.value))
        db.session.commit()
