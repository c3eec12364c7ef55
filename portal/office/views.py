"""Office screens: jobs, clients and their billing policy, sites, line-item templates."""
from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user

from portal.audit.services import Actor, trail_for_job
from portal.auth.models import STAFF_ROLES
from portal.auth.services import roles_required
from portal.clients.models import Client, Site
from portal.clients.services import (client_choices, create_client, create_site, get_client_for, get_site_for,
                                     recent_jobs_for, search_clients, update_client, update_site)
from portal.errors import ServiceError
from portal.extensions import db, row_id_arg
from portal.jobs import catalog
from portal.jobs.services import (active_templates, add_line_item, add_note, assignable_crew, complete_job,
                                  get_job_for, get_line_item_for, remove_line_item, reopen_job,
                                  require_items_editable, schedule_job, search_jobs, update_job,
                                  update_line_item)
from portal.reminders.services import set_reminder_policy
from portal.referrals.forms import client_form_with_referral
from portal.referrals.services import set_client_referral
from portal.timeutil import format_business_time
from portal.office.forms import (AddLineItemForm, CompleteJobForm, EditLineItemForm, JobFilterForm,
                                 JobForm, NoteForm, ReopenJobForm, SiteForm, TemplateForm, site_choices)

bp = Blueprint("office", __name__)
JOBS_PER_PAGE = 50
CLIENTS_PER_PAGE = 50


@bp.before_request
@roles_required(*STAFF_ROLES)
def require_staff():
    """Every office screen is for office staff and owners; others get 404, as if it were not there."""


@bp.context_processor
def office_template_helpers():
    """Display helpers for office templates only; the layout and other areas keep their own."""
    return {"business_time": format_business_time, "format_quantity": format_quantity,
            "page_url": page_url}


def format_quantity(quantity):
    """2.500 → 2.5 and 3.000 → 3, without the exponent Decimal.normalize would show for 10."""
    text = f"{quantity:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def page_url(page):
    """This screen's URL with the same filters, on another page."""
    return url_for(request.endpoint, **{**request.view_args, **request.args.to_dict(), "page": page})


def actor():
    """The signed-in staff member, as the audit log names them."""
    return Actor.for_user(current_user)


def refused_status(status):
    """The status for an answer that shows a refusal: the real one, or 200 for htmx."""
    # htmx 2 does not swap 4xx answers in by default, and boosted forms are htmx requests too:
    # without a 200 the person would see nothing happen. See the note on base.html in the report.
    return 200 if request.htmx else status


# --- Jobs -----------------------------------------------------------------------------------------

@bp.route("/jobs")
def jobs():
    filters = JobFilterForm(formdata=request.args)
    filters.set_choices(client_choices(), assignable_crew())
    filters.validate()
    page = request.args.get("page", 1, type=row_id_arg)
    results = search_jobs(current_user, **filters.search_arguments(), page=max(page, 1), per_page=JOBS_PER_PAGE)
    if request.htmx.target == "job-results":
        return render_template("office/_job_results.html", results=results)
    return render_template("office/jobs.html", filters=filters, results=results)


def job_form(data=None):
    """A job form whose pickers offer the clients, the chosen client's sites and the active crew."""
    form = JobForm(data=data)
    form.set_choices(client_choices(), sites_of(form.client_id.data), assignable_crew())
    return form


def sites_of(client_id):
    """The sites of the client with this id; none when there is no such client."""
    client = db.session.get(Client, client_id) if client_id else None
    return client.sites if client is not None else []


def chosen_site(form):
    """The picked site row, or None for the client's billing address; the job services check its client."""
    return db.get_or_404(Site, form.site_id.data) if form.site_id.data else None


def render_job_form(form, job, status=200):
    return render_template("office/job_form.html", form=form, job=job), status


@bp.route("/jobs/new", methods=["GET", "POST"])
def new_job():
    form = job_form({"client_id": request.args.get("client_id", 0, type=row_id_arg)})
    if form.validate_on_submit():
        try:
            job = schedule_job(get_client_for(current_user, form.client_id.data), by=actor(),
                               site=chosen_site(form), crew=form.selected_crew(), **form.job_fields())
        except ServiceError as error:
            db.session.rollback()
            form.apply_service_errors(error)
            return render_job_form(form, None, refused_status(error.status))
        db.session.commit()
        flash(f"Job {job.number} scheduled.", "success")
        return redirect(url_for("office.job", job_id=job.id))
    return render_job_form(form, None, refused_status(422) if form.is_submitted() else 200)


@bp.route("/jobs/site-options")
def site_options():
    """The site picker for the client just chosen in the job form."""
    sites = sites_of(request.args.get("client_id", type=row_id_arg))
    return render_template("office/_site_field.html", choices=site_choices(sites), selected=0, errors=[])


@bp.route("/jobs/<int:job_id>")
def job(job_id):
    return render_job_page(get_job_for(current_user, job_id))


def render_job_page(job, *, status=200, error=None, note_form=None, complete_form=None, reopen_form=None,
                    **line_items):
    """The job detail page; `error` shows a refusal at the top, `line_items` sets up that component."""
    context = {
        "trail": trail_for_job(job.id),
        "note_form": note_form or NoteForm(formdata=None),
        "complete_form": complete_form or CompleteJobForm(formdata=None),
        "reopen_form": reopen_form or ReopenJobForm(formdata=None),
        "error": error,
        **line_items_context(job, **line_items),
    }
    return render_template("office/job.html", **context), status


def items_locked_reason(job):
    """Why the office cannot change this job's items now, in the service's words; None when it can."""
    try:
        require_items_editable(job, actor())
    except ServiceError as refusal:
        return refusal.message
    return None


def line_items_context(job, *, add_form=None, editing=None, edit_form=None, items_error=None):
    """What _line_items.html needs: the lines, the add form, the row being edited and any refusal."""
    if add_form is None:
        add_form = AddLineItemForm(formdata=None)
        add_form.set_choices(active_templates(job.currency))
    return {"job": job, "add_form": add_form, "editing": editing, "edit_form": edit_form,
            "items_error": items_error, "locked_reason": items_locked_reason(job)}


def line_items_response(job, *, status=200, **context):
    """The line-items component for htmx; for a plain request, the job page (or back to it)."""
    if request.htmx.target == "line-items":
        return render_template("office/_line_items.html", **line_items_context(job, **context)), refused_status(status)
    if status == 200 and request.method == "POST":
        return redirect(url_for("office.job", job_id=job.id, _anchor="line-items"))
    return render_job_page(job, status=refused_status(status), **context)


@bp.route("/jobs/<int:job_id>/items")
def line_items(job_id):
    """The line-items component; `?edit=<item id>` turns that row into a form."""
    job = get_job_for(current_user, job_id)
    editing = request.args.get("edit", type=int)
    if editing is not None:
        item = get_line_item_for(current_user, job.id, editing)
        return line_items_response(job, editing=item.id, edit_form=EditLineItemForm(formdata=None, obj=item))
    return line_items_response(job)


@bp.route("/jobs/<int:job_id>/items", methods=["POST"], endpoint="add_line_item")
def add_line_item_view(job_id):
    job = get_job_for(current_user, job_id)
    form = AddLineItemForm()
    form.set_choices(active_templates(job.currency))
    if not form.validate():
        return line_items_response(job, add_form=form, items_error="Check the new line.", status=422)
    try:
        # The office prices work from its desk; only the crew's own lines mean work has started.
        add_line_item(job, by=actor(), start_work=False, **form.line_fields())
    except ServiceError as error:
        db.session.rollback()
        form.apply_service_errors(error)
        return line_items_response(job, add_form=form, items_error=error.message, status=error.status)
    db.session.commit()
    return line_items_response(job)


@bp.route("/jobs/<int:job_id>/items/<int:item_id>", methods=["POST"], endpoint="update_line_item")
def update_line_item_view(job_id, item_id):
    item = get_line_item_for(current_user, job_id, item_id)
    job = item.job
    form = EditLineItemForm()
    if not form.validate():
        return line_items_response(job, editing=item.id, edit_form=form, items_error="Check the line.", status=422)
    try:
        update_line_item(item, by=actor(), **form.line_fields())
    except ServiceError as error:
        db.session.rollback()
        form.apply_service_errors(error)
        return line_items_response(job, editing=item.id, edit_form=form, items_error=error.message,
                                   status=error.status)
    db.session.commit()
    return line_items_response(job)


@bp.route("/jobs/<int:job_id>/items/<int:item_id>/remove", methods=["POST"], endpoint="remove_line_item")
def remove_line_item_view(job_id, item_id):
    item = get_line_item_for(current_user, job_id, item_id)
    job = item.job
    try:
        remove_line_item(item, by=actor())
    except ServiceError as error:
        db.session.rollback()
        return line_items_response(job, items_error=error.message, status=error.status)
    db.session.commit()
    return line_items_response(job)


@bp.route("/jobs/<int:job_id>/notes", methods=["POST"], endpoint="add_note")
def add_note_view(job_id):
    job = get_job_for(current_user, job_id)
    form = NoteForm()
    if not form.validate():
        return render_job_page(job, status=refused_status(422), error="Write a note first.", note_form=form)
    try:
        add_note(job, form.body.data, by=actor())
    except ServiceError as error:
        db.session.rollback()
        return render_job_page(job, status=refused_status(error.status), error=error.message, note_form=form)
    db.session.commit()
    flash("Note added.", "success")
    return redirect(url_for("office.job", job_id=job.id, _anchor="notes"))


@bp.route("/jobs/<int:job_id>/complete", methods=["POST"], endpoint="complete_job")
def complete_job_view(job_id):
    """Complete the job on the crew's behalf (a call from site, a crew without a phone)."""
    job = get_job_for(current_user, job_id)
    form = CompleteJobForm()
    if not form.validate():
        return render_job_page(job, status=refused_status(422), error="Check the form.", complete_form=form)
    try:
        job = complete_job(job, by=actor(), no_charge_reason=form.no_charge_reason.data or None)
    except ServiceError as error:
        db.session.rollback()
        return render_job_page(job, status=refused_status(error.status), error=error.message, complete_form=form)
    db.session.commit()
    flash(f"Job {job.number} completed: {job.billing_status.label}.", "success")
    return redirect(url_for("office.job", job_id=job.id))


@bp.route("/jobs/<int:job_id>/reopen", methods=["POST"], endpoint="reopen_job")
def reopen_job_view(job_id):
    job = get_job_for(current_user, job_id)
    form = ReopenJobForm()
    if not form.validate():
        return render_job_page(job, status=refused_status(422), error="Say why the job is reopened.",
                               reopen_form=form)
    try:
        job = reopen_job(job, by=actor(), reason=form.reason.data)
    except ServiceError as error:
        db.session.rollback()
        return render_job_page(job, status=refused_status(error.status), error=error.message, reopen_form=form)
    db.session.commit()
    flash(f"Job {job.number} reopened.", "success")
    return redirect(url_for("office.job", job_id=job.id))


@bp.route("/jobs/<int:job_id>/edit", methods=["GET", "POST"])
def edit_job(job_id):
    job = get_job_for(current_user, job_id)
    form = job_form(JobForm.data_for(job))
    if form.validate_on_submit():
        try:
            update_job(job, by=actor(), client=get_client_for(current_user, form.client_id.data),
                       site=chosen_site(form), crew=form.selected_crew(), **form.job_fields())
        except ServiceError as error:
            db.session.rollback()
            form.apply_service_errors(error)
            return render_job_form(form, job, refused_status(error.status))
        db.session.commit()
        flash(f"Job {job.number} saved.", "success")
        return redirect(url_for("office.job", job_id=job.id))
    return render_job_form(form, job, refused_status(422) if form.is_submitted() else 200)


# --- Clients and sites ----------------------------------------------------------------------------

@bp.route("/clients")
def clients():
    text = request.args.get("q", "")
    page = request.args.get("page", 1, type=row_id_arg)
    results = db.paginate(search_clients(text), page=page, per_page=CLIENTS_PER_PAGE, error_out=False)
    return render_template("office/clients.html", results=results, q=text)


@bp.route("/clients/new", methods=["GET", "POST"])
def new_client():
    form = client_form_with_referral()
    if form.validate_on_submit():
        try:
            client = create_client(by=actor(), **form.client_fields())
            set_reminder_policy(client, by=actor(), **form.reminder_fields())
            set_client_referral(client, by=actor(), **form.referral_fields())
        except ServiceError as error:
            db.session.rollback()
            form.apply_service_errors(error)
            return render_template("office/client_form.html", form=form, client=None), refused_status(error.status)
        db.session.commit()
        flash(f"Client {client.name} added.", "success")
        return redirect(url_for("office.client", client_id=client.id))
    status = refused_status(422) if form.is_submitted() else 200
    return render_template("office/client_form.html", form=form, client=None), status


@bp.route("/clients/<int:client_id>")
def client(client_id):
    client = get_client_for(current_user, client_id)
    return render_template("office/client.html", client=client, jobs=recent_jobs_for(client))


@bp.route("/clients/<int:client_id>/edit", methods=["GET", "POST"])
def edit_client(client_id):
    client = get_client_for(current_user, client_id)
    form = client_form_with_referral(client)
    if form.validate_on_submit():
        try:
            update_client(client, by=actor(), **form.client_fields())
            set_reminder_policy(client, by=actor(), **form.reminder_fields())
            set_client_referral(client, by=actor(), **form.referral_fields())
        except ServiceError as error:
            db.session.rollback()
            form.apply_service_errors(error)
            return render_template("office/client_form.html", form=form, client=client), refused_status(error.status)
        db.session.commit()
        flash(f"Client {client.name} saved.", "success")
        return redirect(url_for("office.client", client_id=client.id))
    status = refused_status(422) if form.is_submitted() else 200
    return render_template("office/client_form.html", form=form, client=client), status


@bp.route("/clients/<int:client_id>/sites/new", methods=["GET", "POST"])
def new_site(client_id):
    client = get_client_for(current_user, client_id)
    form = SiteForm()
    if form.validate_on_submit():
        try:
            site = create_site(client, by=actor(), **form.site_fields())
        except ServiceError as error:
            db.session.rollback()
            form.apply_service_errors(error)
            return (render_template("office/site_form.html", form=form, client=client, site=None),
                    refused_status(error.status))
        db.session.commit()
        flash(f"Site {site.name} added.", "success")
        return redirect(url_for("office.client", client_id=client.id))
    status = refused_status(422) if form.is_submitted() else 200
    return render_template("office/site_form.html", form=form, client=client, site=None), status


@bp.route("/clients/<int:client_id>/sites/<int:site_id>/edit", methods=["GET", "POST"])
def edit_site(client_id, site_id):
    site = get_site_for(current_user, client_id, site_id)
    form = SiteForm(obj=site)
    if form.validate_on_submit():
        try:
            update_site(site, by=actor(), **form.site_fields())
        except ServiceError as error:
            db.session.rollback()
            form.apply_service_errors(error)
            return (render_template("office/site_form.html", form=form, client=site.client, site=site),
                    refused_status(error.status))
        db.session.commit()
        flash(f"Site {site.name} saved.", "success")
        return redirect(url_for("office.client", client_id=site.client_id))
    status = refused_status(422) if form.is_submitted() else 200
    return render_template("office/site_form.html", form=form, client=site.client, site=site), status


# --- Line-item templates --------------------------------------------------------------------------

@bp.route("/templates")
def templates():
    return render_template("office/templates.html", templates=catalog.all_templates())


@bp.route("/templates/new", methods=["GET", "POST"])
def new_template():
    form = TemplateForm()
    if form.validate_on_submit():
        try:
            template = catalog.create_template(by=actor(), **form.template_fields())
        except ServiceError as error:
            db.session.rollback()
            form.apply_service_errors(error)
            return render_template("office/template_form.html", form=form, template=None), refused_status(error.status)
        db.session.commit()
        flash(f"{template.name} added to the price list.", "success")
        return redirect(url_for("office.templates"))
    status = refused_status(422) if form.is_submitted() else 200
    return render_template("office/template_form.html", form=form, template=None), status


@bp.route("/templates/<int:template_id>/edit", methods=["GET", "POST"])
def edit_template(template_id):
    template = catalog.get_template_for(current_user, template_id)
    form = TemplateForm(obj=template)
    if form.validate_on_submit():
        try:
            catalog.update_template(template, by=actor(), **form.template_fields())
        except ServiceError as error:
            db.session.rollback()
            form.apply_service_errors(error)
            return (render_template("office/template_form.html", form=form, template=template),
                    refused_status(error.status))
        db.session.commit()
        flash(f"{template.name} saved.", "success")
        return redirect(url_for("office.templates"))
    status = refused_status(422) if form.is_submitted() else 200
    return render_template("office/template_form.html", form=form, template=template), status


@bp.route("/templates/<int:template_id>/retire", methods=["POST"])
def retire_template(template_id):
    return change_template_activity(template_id, catalog.retire_template, "retired: crews no longer see it")


@bp.route("/templates/<int:template_id>/restore", methods=["POST"])
def restore_template(template_id):
    return change_template_activity(template_id, catalog.restore_template, "is back in the price list")


def change_template_activity(template_id, change, done):
    """Retire or restore a template, then back to the price list with what happened."""
    template = catalog.get_template_for(current_user, template_id)
    try:
        change(template, by=actor())
    except ServiceError as error:
        db.session.rollback()
        flash(error.message, "error")
        return redirect(url_for("office.templates"))
    db.session.commit()
    flash(f"{template.name} {done}.", "success")
    return redirect(url_for("office.templates"))


from portal.office import billing_views  # noqa: E402,F401  (registers the billing routes on this blueprint)
