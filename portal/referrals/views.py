"""Referral screens: partner setup, attribution and the payouts ledger for staff; the partner portal for partners.

Two blueprints: `partners` lives under /office and is for staff only; `partner` is the portal at /partner,
for partner logins only, and every row it shows comes through a loader scoped to the signed-in partner.
"""
from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from flask_login import current_user

from portal.audit.services import Actor
from portal.auth.models import STAFF_ROLES, Role
from portal.auth.services import roles_required
from portal.billing.stripe_gateway import StripeRefused, StripeUnavailable
from portal.clients.services import client_choices, get_client_for
from portal.errors import ServiceError
from portal.extensions import ROW_ID, db, row_id_arg
from portal.jobs.services import get_job_for
from portal.referrals import services
from portal.referrals.forms import STATUS_LABELS, ClientReferralForm, JobReferralForm, LedgerFilterForm, PartnerForm
from portal.referrals.models import AccountStatus, PayoutStatus
from portal.referrals.settlement import refresh_account, retry_payout, start_onboarding
from portal.timeutil import format_business_time, to_business_time

staff_bp = Blueprint("partners", __name__)
portal_bp = Blueprint("partner", __name__)
LEDGER_PER_PAGE = 50


@staff_bp.before_request
@roles_required(*STAFF_ROLES)
def require_staff():
    """Partner setup and the ledger are for office staff and owners; others get 404."""


@portal_bp.before_request
@roles_required(Role.PARTNER)
def require_partner():
    """The portal is for partner logins; staff use the office screens."""


@staff_bp.app_context_processor
def referral_template_helpers():
    """Helpers every referral template uses, and the job page's referral component builder."""
    return {"payout_status_label": STATUS_LABELS.get, "describe_fee_rule": services.describe_fee_rule,
            "has_fee_override": services.has_fee_override, "job_referral_panel": job_referral_panel,
            "open_client_referral": services.open_client_referral,
            "business_date": lambda moment: to_business_time(moment).strftime("%b %d, %Y") if moment else ""}


@staff_bp.context_processor
@portal_bp.context_processor
def time_helpers():
    return {"business_time": format_business_time}


def actor():
    return Actor.for_user(current_user)


def refused_status(status):
    """htmx 2 does not swap most 4xx answers in: a refusal shown in a component answers 200 to htmx."""
    return 200 if request.htmx else status


def stripe_trouble(error):
    """A sentence for the office when Stripe could not do what was asked."""
    if isinstance(error, StripeUnavailable):
        return f"Stripe could not be reached ({error}). Nothing was changed; try again in a minute."
    return f"Stripe refused: {error}."


# --- Partners --------------------------------------------------------------------------------------------

@staff_bp.route("/partners")
def index():
    return render_template("referrals/partners.html", partners=services.all_partners())


def render_partner_form(form, partner, status=200):
    return render_template("referrals/partner_form.html", form=form, partner=partner), status


@staff_bp.route("/partners/new", methods=["GET", "POST"])
def new_partner():
    form = PartnerForm()
    if form.validate_on_submit():
        try:
            partner = services.create_partner(by=actor(), **form.partner_fields())
        except ServiceError as error:
            db.session.rollback()
            form.apply_service_errors(error)
            return render_partner_form(form, None, refused_status(error.status))
        db.session.commit()
        flash(f"Partner {partner.name} added. They can sign in with {partner.user.email}.", "success")
        return redirect(url_for("partners.partner", partner_id=partner.id))
    return render_partner_form(form, None, refused_status(422) if form.is_submitted() else 200)


@staff_bp.route(f"/partners/<{ROW_ID}:partner_id>")
def partner(partner_id):
    partner = services.get_partner_for(current_user, partner_id)
    return render_partner_page(partner, notice=read_onboarding_account(partner))


def read_onboarding_account(partner):
    """Stripe sends people back here when onboarding ends: re-read the account; a notice if that failed."""
    if partner.account_status != AccountStatus.ONBOARDING:
        return None
    try:
        refresh_account(partner, by=actor())
        db.session.commit()
    except (StripeUnavailable, StripeRefused, ServiceError) as error:
        db.session.rollback()
        return stripe_trouble(error) if not isinstance(error, ServiceError) else error.message
    return None


def render_partner_page(partner, *, referral_form=None, status=200, notice=None):
    if referral_form is None:
        referral_form = ClientReferralForm(formdata=None)
    referral_form.set_choices(client_choices())
    recent = db.session.scalars(services.ledger_query(services.LedgerFilters(partner_id=partner.id)).limit(10)).all()
    return render_template("referrals/partner.html", partner=partner, referrals=services.referrals_of(partner),
                           referral_form=referral_form, payouts=recent, notice=notice,
                           totals=services.ledger_totals(services.LedgerFilters(partner_id=partner.id)),
                           is_open=services.is_open), status


@staff_bp.route(f"/partners/<{ROW_ID}:partner_id>/edit", methods=["GET", "POST"])
def edit_partner(partner_id):
    partner = services.get_partner_for(current_user, partner_id)
    form = PartnerForm(data=PartnerForm.data_for(partner))
    if form.validate_on_submit():
        try:
            services.update_partner(partner, by=actor(), **form.partner_fields())
        except ServiceError as error:
            db.session.rollback()
            form.apply_service_errors(error)
            return render_partner_form(form, partner, refused_status(error.status))
        db.session.commit()
        flash(f"Partner {partner.name} saved.", "success")
        return redirect(url_for("partners.partner", partner_id=partner.id))
    return render_partner_form(form, partner, refused_status(422) if form.is_submitted() else 200)


@staff_bp.route(f"/partners/<{ROW_ID}:partner_id>/onboarding", methods=["GET", "POST"])
def start_partner_onboarding(partner_id):
    """Send the browser to Stripe's onboarding; GET is Stripe's refresh_url when a link has expired."""
    partner = services.get_partner_for(current_user, partner_id)
    try:
        url = start_onboarding(partner, by=actor())
    except (StripeUnavailable, StripeRefused) as error:
        db.session.rollback()
        flash(stripe_trouble(error), "error")
        return redirect(url_for("partners.partner", partner_id=partner.id), 303)
    db.session.commit()
    return redirect(url, 303)


@staff_bp.route(f"/partners/<{ROW_ID}:partner_id>/account/refresh", methods=["POST"])
def refresh_partner_account(partner_id):
    """"Check again": re-read the connected account, e.g. when the partner finished onboarding on their own."""
    partner = services.get_partner_for(current_user, partner_id)
    try:
        refresh_account(partner, by=actor())
    except (StripeUnavailable, StripeRefused) as error:
        db.session.rollback()
        flash(stripe_trouble(error), "error")
    except ServiceError as error:
        db.session.rollback()
        flash(error.message, "error")
    else:
        db.session.commit()
        flash(f"Stripe account: {partner.account_status.value}.", "success")
    return redirect(url_for("partners.partner", partner_id=partner.id), 303)


@staff_bp.route(f"/partners/<{ROW_ID}:partner_id>/referrals", methods=["POST"])
def add_client_referral(partner_id):
    partner = services.get_partner_for(current_user, partner_id)
    form = ClientReferralForm()
    form.set_choices(client_choices())
    if not form.validate():
        return render_partner_page(partner, referral_form=form, status=refused_status(422))
    client = get_client_for(current_user, form.client_id.data)
    try:
        services.add_referral(partner, by=actor(), client=client, **form.referral_fields())
    except ServiceError as error:
        db.session.rollback()
        error.fields = {("client_id" if name in ("partner_id", "target") else name): message
                        for name, message in error.fields.items()}
        form.apply_service_errors(error)
        return render_partner_page(partner, referral_form=form, status=refused_status(error.status))
    db.session.commit()
    flash(f"{client.name} is now referred by {partner.name}.", "success")
    return redirect(url_for("partners.partner", partner_id=partner.id, _anchor="referrals"), 303)


@staff_bp.route(f"/partners/<{ROW_ID}:partner_id>/referrals/<{ROW_ID}:referral_id>/end", methods=["POST"])
def end_client_referral(partner_id, referral_id):
    partner = services.get_partner_for(current_user, partner_id)
    referral = services.get_referral_for(current_user, partner, referral_id)
    try:
        services.end_referral(referral, by=actor())
    except ServiceError as error:
        db.session.rollback()
        flash(error.message, "error")
    else:
        db.session.commit()
        flash("Referral ended: jobs billed from now on earn no fee from it.", "success")
    return redirect(url_for("partners.partner", partner_id=partner.id, _anchor="referrals"), 303)


# --- The job page's referral component -------------------------------------------------------------------

def job_referral_panel(job, form=None, error=None, notice=None):
    """What referrals/_job_referral.html shows: who referred the job, its own referrals, and the add form."""
    if form is None:
        form = JobReferralForm(formdata=None)
    form.set_choices(services.partner_choices())
    return {"job": job, "current": services.referral_of_job(job), "own": services.job_referrals(job),
            "form": form, "error": error, "notice": notice, "is_open": services.is_open}


def job_referral_response(job, *, status=200, **panel):
    if request.htmx.target == "job-referral":
        return (render_template("referrals/_job_referral.html", job=job, panel=job_referral_panel(job, **panel)),
                refused_status(status))
    if status == 200:
        flash(panel.get("notice"), "success")
    else:
        flash(panel.get("error"), "error")
    return redirect(url_for("office.job", job_id=job.id, _anchor="job-referral"), 303)


@staff_bp.route(f"/jobs/<{ROW_ID}:job_id>/referral", methods=["POST"])
def add_job_referral(job_id):
    job = get_job_for(current_user, job_id)
    form = JobReferralForm()
    form.set_choices(services.partner_choices())
    if not form.validate():
        return job_referral_response(job, status=422, form=form, error="Check the referral.")
    partner = services.get_partner_for(current_user, form.partner_id.data)
    try:
        services.add_referral(partner, by=actor(), job=job, **form.referral_fields())
    except ServiceError as error:
        db.session.rollback()
        form.apply_service_errors(error)
        return job_referral_response(job, status=error.status, form=form, error=error.message)
    db.session.commit()
    return job_referral_response(job, notice=f"Job {job.number} is referred by {partner.name}.")


@staff_bp.route(f"/jobs/<{ROW_ID}:job_id>/referral/<{ROW_ID}:referral_id>/end", methods=["POST"])
def end_job_referral(job_id, referral_id):
    job = get_job_for(current_user, job_id)
    referral = next((own for own in services.job_referrals(job) if own.id == referral_id), None)
    if referral is None:
        return job_referral_response(job, status=404, error="That referral is not this job's.")
    try:
        services.end_referral(referral, by=actor())
    except ServiceError as error:
        db.session.rollback()
        return job_referral_response(job, status=error.status, error=error.message)
    db.session.commit()
    return job_referral_response(job, notice="The job's referral ended.")


# --- The payouts ledger ----------------------------------------------------------------------------------

def ledger_filters():
    form = LedgerFilterForm(formdata=request.args)
    form.set_choices(services.partner_choices(include=request.args.get("partner", type=int)))
    form.validate()
    return form, services.LedgerFilters(**form.filter_arguments())


def page_url(page):
    return url_for(request.endpoint, **{**request.view_args, **request.args.to_dict(), "page": page})


@staff_bp.route("/payouts")
def ledger():
    form, filters = ledger_filters()
    page = request.args.get("page", 1, type=row_id_arg)
    results = db.paginate(services.ledger_query(filters), page=page, per_page=LEDGER_PER_PAGE, error_out=False)
    return render_template("referrals/ledger.html", filters=form, results=results,
                           totals=services.ledger_totals(filters), attention=services.payouts_needing_attention(),
                           csv_url=url_for("partners.ledger_csv", **request.args.to_dict()), page_url=page_url)


@staff_bp.route("/payouts.csv")
def ledger_csv():
    _, filters = ledger_filters()
    payouts = db.session.scalars(services.ledger_query(filters)).all()
    return csv_response(services.ledger_csv(payouts, with_partner=True), "payouts.csv")


@staff_bp.route(f"/payouts/<{ROW_ID}:payout_id>/retry", methods=["POST"])
def retry(payout_id):
    """Retry a failed transfer; answers with the payout's component (htmx) or back to the ledger."""
    payout = services.get_payout_for(current_user, payout_id)
    error = notice = None
    try:
        retry_payout(payout, by=actor())
    except ServiceError as refusal:
        db.session.rollback()
        error = refusal.message
    else:
        db.session.commit()
        notice = "Queued again. The transfer goes out in a moment; at most one is ever made."
    db.session.refresh(payout)
    if request.htmx.target == f"payout-{payout.id}":
        return render_template("referrals/_payout_attention.html", payout=payout, notice=notice, error=error)
    flash(error or notice, "error" if error else "success")
    return redirect(url_for("partners.ledger"), 303)


def csv_response(text, filename):
    return Response(text, mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


# --- The partner portal -------------------------------------------------------------------------------------

@portal_bp.route("")
def home():
    partner = services.partner_of(current_user)
    notice = read_onboarding_account(partner)
    return render_template("referrals/portal.html", partner=partner, clients=services.referred_clients(partner),
                           jobs=services.portal_jobs(partner), totals=services.portal_status_totals(partner),
                           months=services.monthly_earnings(partner), PayoutStatus=PayoutStatus, notice=notice)


@portal_bp.route("/payouts-account", methods=["GET", "POST"])
def set_up_payouts():
    """The partner's own way to Stripe's onboarding; GET is Stripe's refresh_url when a link has expired."""
    partner = services.partner_of(current_user)
    try:
        url = start_onboarding(partner, by=actor(), return_path=url_for("partner.home"),
                               refresh_path=url_for("partner.set_up_payouts"))
    except (StripeUnavailable, StripeRefused) as error:
        db.session.rollback()
        flash(stripe_trouble(error), "error")
        return redirect(url_for("partner.home"), 303)
    db.session.commit()
    return redirect(url, 303)


@portal_bp.route("/earnings.csv")
def earnings_csv():
    partner = services.partner_of(current_user)
    return csv_response(services.partner_csv(partner), "earnings.csv")


@portal_bp.route(f"/payouts/<{ROW_ID}:payout_id>")
def payout(payout_id):
    payout = services.get_payout_for(current_user, payout_id)
    return render_template("referrals/portal_payout.html", payout=payout)
