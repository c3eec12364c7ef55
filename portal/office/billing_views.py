"""Office billing screens: the billing component of the job page, Needs attention and Ready to bill.

Routes live on the `office` blueprint, so its staff-only check covers them. Every action on a
job's bill returns the re-rendered component (`office/_billing.html`) to htmx, or redirects to
the job page for a plain form.
"""
from dataclasses import dataclass, field
from functools import cached_property

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from portal.billing.models import BillingStatus, CustomerEmail, TriggerStatus
from portal.billing.services import (OPEN_STATUSES, STUCK_AFTER, approve_draft, bill_now, billing_attention,
                                     mark_no_charge, mark_paid_offline, ready_to_bill_by_client, rebill_job,
                                     resend_email, retry_job_billing, void_record)
from portal.billing.stripe_gateway import StripeRefused, StripeUnavailable
from portal.clients.services import get_client_for
from portal.documents.services import open_document_links_of, revoke_job_document_links
from portal.errors import ServiceError, TransitionNotAllowed
from portal.extensions import db
from portal.jobs.models import WorkStatus
from portal.jobs.services import get_job_for
from portal.office.forms import BillNowForm, NoChargeForm, PaidOfflineForm, PauseRemindersForm, VoidBillForm
from portal.office.views import actor, bp, refused_status, render_job_page
from portal.reminders.services import (describe_policy, reminder_outlook, request_reminder, set_reminder_policy,
                                       step_label)
from portal.timeutil import utcnow

# The customer can still pay these, so "Resend email" makes sense. Not `processing`: a bank debit is
# in flight, and a second "Pay" email invites paying twice (the email task refuses it too).
RESENDABLE = frozenset({BillingStatus.SENT, BillingStatus.PAYMENT_FAILED, BillingStatus.OVERDUE})
# Money has moved on these: the service refuses to void them (refund in Stripe instead).
MONEY_MOVED = frozenset({BillingStatus.PROCESSING, BillingStatus.PAID, BillingStatus.PARTIALLY_REFUNDED,
                         BillingStatus.REFUNDED, BillingStatus.DISPUTED})
POLL_SECONDS = 3


@dataclass
class BillingPanel:
    """What the billing component shows for one job, and which office actions its state allows."""

    job: object
    notice: str | None = None
    error: str | None = None
    void_form: VoidBillForm = field(default_factory=lambda: VoidBillForm(formdata=None))
    paid_form: PaidOfflineForm = field(default_factory=lambda: PaidOfflineForm(formdata=None))
    no_charge_form: NoChargeForm = field(default_factory=lambda: NoChargeForm(formdata=None))

    @cached_property
    def record(self):
        return self.job.live_billing_record

    @cached_property
    def trigger(self):
        return self.job.billing_triggers[-1] if self.job.billing_triggers else None

    @property
    def batch(self):
        return self.record.batch if self.record is not None else None

    @property
    def bill_records(self):
        """The live records this bill covers: a batch invoice's jobs, or this job's record alone."""
        if self.batch is not None:
            return [shared for shared in self.batch.records if shared.live]
        return [self.record] if self.record is not None else []

    @property
    def other_jobs_on_bill(self):
        return [shared.job for shared in self.bill_records if shared.job_id != self.job.id]

    @property
    def closed_records(self):
        return [closed for closed in self.job.billing_records if not closed.live]

    @cached_property
    def emails(self):
        """Every email sent for this bill, oldest first (a batch's email hangs on one of its records)."""
        ids = [shared.id for shared in self.bill_records]
        if not ids:
            return []
        return db.session.scalars(select(CustomerEmail).where(CustomerEmail.record_id.in_(ids))
                                  .order_by(CustomerEmail.id)).all()

    @property
    def in_progress(self):
        """The worker still has work queued for this job; the component polls until it is done."""
        if self.batch is not None and self.batch.status == TriggerStatus.PENDING:
            return True
        return self.trigger is not None and self.trigger.status == TriggerStatus.PENDING

    @property
    def pending_since(self):
        work = self.batch if self.batch is not None and self.batch.status == TriggerStatus.PENDING else self.trigger
        return work.created_at

    @property
    def pending_attempts(self):
        work = self.batch if self.batch is not None and self.batch.status == TriggerStatus.PENDING else self.trigger
        return work.attempts

    @property
    def stuck(self):
        return self.in_progress and self.pending_since < utcnow() - STUCK_AFTER

    @property
    def failure(self):
        """The failed batch or trigger behind "Billing failed", for its error and attempts; else None."""
        if self.job.billing_status != BillingStatus.FAILED or self.in_progress:
            return None
        if self.batch is not None and self.batch.status == TriggerStatus.FAILED:
            return self.batch
        if self.trigger is not None and self.trigger.status == TriggerStatus.FAILED:
            return self.trigger
        return None

    # Which actions to offer. The services decide for real; these only keep refused buttons off the screen.
    @property
    def can_approve(self):
        return not self.in_progress and self.record is not None and self.record.status == BillingStatus.DRAFT

    @property
    def can_resend(self):
        return self.record is not None and self.record.status in RESENDABLE

    @cached_property
    def reminder_outlook(self):
        """The next automatic reminder of this bill, or why there is none (paused, limit reached)."""
        return reminder_outlook(self.record)

    @property
    def can_remind(self):
        """A reminder by hand: the same bills as a resend, whatever the client's schedule or pause says."""
        return self.can_resend

    @property
    def can_mark_paid(self):
        return (not self.in_progress and self.record is not None
                and self.record.status in (BillingStatus.DRAFT, *OPEN_STATUSES))

    @property
    def can_void(self):
        return (not self.in_progress and self.record is not None
                and self.record.status not in MONEY_MOVED | {BillingStatus.PENDING})

    @property
    def can_rebill(self):
        return (not self.in_progress and self.job.work_status == WorkStatus.COMPLETED and self.record is None
                and self.job.billing_status == BillingStatus.NOT_BILLED)

    @property
    def can_mark_no_charge(self):
        return (not self.in_progress and self.job.work_status == WorkStatus.COMPLETED
                and self.job.billing_status != BillingStatus.NO_CHARGE
                and (self.record is None or self.can_void))

    @property
    def can_retry(self):
        return self.failure is not None

    @cached_property
    def open_document_links(self):
        """Customer links (/d/<token>) to this job's proof that still open."""
        return open_document_links_of(self.job)

    @property
    def can_revoke_links(self):
        return self.open_document_links > 0

    @property
    def has_actions(self):
        return any((self.can_approve, self.can_resend, self.can_remind, self.can_mark_paid, self.can_void,
                    self.can_rebill, self.can_mark_no_charge, self.can_retry, self.can_revoke_links))


@bp.context_processor
def billing_template_helpers():
    """The job page includes the billing component with only `job` at hand; this builds the rest."""
    return {"billing_panel": BillingPanel, "poll_seconds": POLL_SECONDS, "reminder_step_label": step_label,
            "describe_reminder_policy": describe_policy}


def live_record_of(job):
    """The bill an action works on; a refusal (shown in the component) when the job has none any more."""
    # Not a 404: the job exists, and a second tab or a colleague may simply have voided the bill.
    if job.live_billing_record is None:
        raise TransitionNotAllowed("This job has no open bill any more; the box below shows where it stands.")
    return job.live_billing_record


def billing_response(job, *, status=200, notice=None, error=None, **forms):
    """The component for htmx; for a plain form, back to the job page (or the page, with the refusal)."""
    if request.htmx.target == "billing":
        panel = BillingPanel(job, notice=notice, error=error, **forms)
        return render_template("office/_billing.html", job=job, billing=panel), refused_status(status)
    if request.form.get("back") == "attention":
        flash(error or notice, "error" if error else "success")
        return redirect(url_for("office.needs_attention"), 303)
    if error is None:
        flash(notice, "success")
        return redirect(url_for("office.job", job_id=job.id, _anchor="billing"), 303)
    return render_job_page(job, status=refused_status(status), error=error)


def run_billing_action(job, action, done, **forms):
    """Run one billing service; commit and say `done`, or roll back and show why nothing changed."""
    try:
        action()
    except ServiceError as refusal:
        db.session.rollback()
        return billing_response(job, status=refusal.status, error=refusal.message, **forms)
    except StripeUnavailable as outage:
        db.session.rollback()
        return billing_response(job, status=502, error=f"Stripe could not be reached ({outage}), so nothing "
                                                       "was changed. Try again in a minute.", **forms)
    except StripeRefused as refusal:
        db.session.rollback()
        return billing_response(job, status=409, error=f"{refusal}. Nothing was changed here.", **forms)
    db.session.commit()
    return billing_response(job, notice=done)


def invalid_form(job, form, **forms):
    """A billing form that failed validation: its first message, and the form kept with what was typed."""
    message = next(iter(form.errors.values()))[0]
    if "csrf_token" in form.errors:
        message = "The form expired; reload the page and try again."
    return billing_response(job, status=422, error=message, **forms)


# --- The billing component of the job page -----------------------------------------------------------

@bp.route("/jobs/<int:job_id>/billing")
def billing(job_id):
    """The component alone: what htmx polls while billing is pending."""
    job = get_job_for(current_user, job_id)
    return render_template("office/_billing.html", job=job, billing=BillingPanel(job))


@bp.route("/jobs/<int:job_id>/billing/approve", methods=["POST"], endpoint="approve_bill")
def approve_bill_view(job_id):
    job = get_job_for(current_user, job_id)
    return run_billing_action(job, lambda: approve_draft(live_record_of(job), by=actor()),
                              "Invoice approved and sent. The customer's email is on its way.")


@bp.route("/jobs/<int:job_id>/billing/void", methods=["POST"], endpoint="void_bill")
def void_bill_view(job_id):
    job = get_job_for(current_user, job_id)
    form = VoidBillForm()
    if not form.validate():
        return invalid_form(job, form, void_form=form)
    return run_billing_action(job, lambda: void_record(live_record_of(job), by=actor(), reason=form.reason.data),
                              "Bill voided. Edit the items if needed, then re-bill.", void_form=form)


@bp.route("/jobs/<int:job_id>/billing/rebill", methods=["POST"], endpoint="rebill")
def rebill_view(job_id):
    job = get_job_for(current_user, job_id)
    return run_billing_action(job, lambda: rebill_job(job, by=actor()), "Billing again with the current items.")


@bp.route("/jobs/<int:job_id>/billing/paid-offline", methods=["POST"], endpoint="mark_paid_offline")
def mark_paid_offline_view(job_id):
    job = get_job_for(current_user, job_id)
    form = PaidOfflineForm()
    if not form.validate():
        return invalid_form(job, form, paid_form=form)
    return run_billing_action(
        job, lambda: mark_paid_offline(live_record_of(job), by=actor(), method=form.method.data,
                                       note=(form.note.data or "").strip()),
        f"Marked paid offline ({form.method.data}).", paid_form=form)


@bp.route("/jobs/<int:job_id>/billing/no-charge", methods=["POST"], endpoint="mark_no_charge")
def mark_no_charge_view(job_id):
    job = get_job_for(current_user, job_id)
    form = NoChargeForm()
    if not form.validate():
        return invalid_form(job, form, no_charge_form=form)
    return run_billing_action(job, lambda: mark_no_charge(job, by=actor(), reason=form.reason.data),
                              "Marked no charge.", no_charge_form=form)


@bp.route("/jobs/<int:job_id>/billing/resend", methods=["POST"], endpoint="resend_bill_email")
def resend_bill_email_view(job_id):
    job = get_job_for(current_user, job_id)
    return run_billing_action(job, lambda: resend_email(live_record_of(job), by=actor()),
                              "The bill email is being sent again.")


@bp.route("/jobs/<int:job_id>/billing/remind", methods=["POST"], endpoint="send_reminder")
def send_reminder_view(job_id):
    job = get_job_for(current_user, job_id)
    return run_billing_action(job, lambda: request_reminder(live_record_of(job), by=actor()),
                              "A reminder with the pay link is on its way to the customer.")


@bp.route("/jobs/<int:job_id>/billing/revoke-links", methods=["POST"], endpoint="revoke_document_links")
def revoke_document_links_view(job_id):
    """A forwarded or leaked email: its proof link stops opening; a resend carries a new one."""
    job = get_job_for(current_user, job_id)
    return run_billing_action(job, lambda: revoke_job_document_links(job, by=actor()),
                              "Customer links revoked: they no longer open the proof. Resend the email to send "
                              "a new link.")


@bp.route("/jobs/<int:job_id>/billing/retry", methods=["POST"], endpoint="retry_billing")
def retry_billing_view(job_id):
    job = get_job_for(current_user, job_id)
    return run_billing_action(job, lambda: retry_job_billing(job, by=actor()),
                              f"Billing {job.number} again: a fresh round of attempts.")


# --- Needs attention and Ready to bill ----------------------------------------------------------------

@bp.route("/billing/attention")
def needs_attention():
    return render_template("office/needs_attention.html", attention=billing_attention(), now=utcnow())


@bp.route("/billing/ready")
def ready_to_bill():
    return render_template("office/ready_to_bill.html", groups=ready_to_bill_by_client(current_user),
                           form=BillNowForm(formdata=None))


@bp.route("/billing/bill-now", methods=["POST"], endpoint="bill_now")
def bill_now_view():
    form = BillNowForm()
    if not form.validate():
        flash(next(iter(form.errors.values()))[0], "error")
        return redirect(url_for("office.ready_to_bill"), 303)
    try:
        batches = bill_now(form.job_ids.data, by=actor())
    except ServiceError as refusal:
        db.session.rollback()
        flash(refusal.message, "error")
        return redirect(url_for("office.ready_to_bill"), 303)
    db.session.commit()
    for batch in batches:
        count = len(batch.records)
        flash(f"Billing {count} job{'' if count == 1 else 's'} for {batch.client.name}: one invoice, "
              "on its way to Stripe…", "success")
    skipped = len(set(form.job_ids.data)) - sum(len(batch.records) for batch in batches)
    if skipped > 0:
        flash(f"{skipped} of the jobs you chose had already left Ready to bill.", "info")
    return redirect(url_for("office.ready_to_bill"), 303)


# --- Reminders: pause or resume a client's automatic reminders -----------------------------------------

@bp.route("/clients/<int:client_id>/reminders", methods=["POST"], endpoint="client_reminders")
def client_reminders_view(client_id):
    client = get_client_for(current_user, client_id)
    form = PauseRemindersForm()
    if not form.validate():
        return reminder_policy_response(client, error="The form expired; reload the page and try again."
                                        if "csrf_token" in form.errors else "Choose pause or resume.", status=422)
    paused = form.paused.data == "yes"
    set_reminder_policy(client, by=actor(), paused=paused)
    db.session.commit()
    return reminder_policy_response(client, notice="Automatic reminders paused." if paused
                                    else "Automatic reminders resumed.")


def reminder_policy_response(client, *, notice=None, error=None, status=200):
    """The client page's reminders box for htmx; for a plain form, back to the client page."""
    if request.htmx:
        return (render_template("office/_reminder_policy.html", client=client, notice=notice, error=error),
                refused_status(status))
    flash(error or notice, "error" if error else "success")
    return redirect(url_for("office.client", client_id=client.id, _anchor="reminder-policy"), 303)
