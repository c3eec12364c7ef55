"""Crew screens: my jobs and closing one out, on a phone.

Every action is a plain form post that works without JavaScript (crews are on
flaky phones); htmx and crew.js requests get the changed component back instead
of a redirect to the page.
"""
from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from portal.audit.services import Actor
from portal.auth.models import Role
from portal.auth.services import roles_required
from portal.crew.services import my_jobs_board
from portal.errors import ServiceError
from portal.extensions import ROW_ID, db
from portal.jobs import services as jobs
from portal.jobs.models import WorkStatus
from portal.photos import services as photos
from portal.photos.validation import describe_bytes
from portal.timeutil import business_zone

bp = Blueprint("crew", __name__)

# Ids are PostgreSQL integers: a larger number in a URL is a 404, not a database error.


@bp.before_request
@roles_required(Role.CREW)
def crew_only():
    """Every crew route is for crew members; anyone else gets 404, so no route can forget it."""


@bp.context_processor
def crew_template_helpers():
    """Formatting helpers for the crew templates."""
    return {"local_time": local_time, "quantity": display_quantity}


def local_time(moment, pattern="%a %b %-d, %-I:%M %p"):
    """An aware UTC datetime as the business's wall-clock time, e.g. 'Tue Nov 3, 2:05 PM'."""
    return moment.astimezone(business_zone()).strftime(pattern) if moment is not None else ""


def display_quantity(value):
    """Decimal('2.500') → '2.5', Decimal('10.000') → '10'."""
    return f"{value.normalize():f}"


def actor():
    """The signed-in crew member, as the audit log names them."""
    return Actor.for_user(current_user)


def wants_fragment():
    """htmx and crew.js requests want the component back; boosted navigation wants the page."""
    return bool(request.htmx) and not request.htmx.boosted


def job_context(job, **extra):
    """What the job page and each of its components render from."""
    return {
        "job": job,
        "editable": job.work_status != WorkStatus.COMPLETED,
        "templates": jobs.active_templates(job.currency),
        "photo_max_bytes": current_app.config["PHOTO_MAX_BYTES"],
        "photo_max_label": describe_bytes(current_app.config["PHOTO_MAX_BYTES"]),
        "errors": {},
        "form": {},
        **extra,
    }


def answer(job, component, error=None):
    """After a change: the component (htmx), or the page again (refused) or a redirect to it (done)."""
    if wants_fragment():
        return render_template(f"crew/_{component}.html", **job_context(job, error=error)), error.status if error else 200
    if error is not None:
        context = job_context(job, errors={component: error}, form=request.form)
        return render_template("crew/job.html", **context), error.status
    return redirect(url_for("crew.job", job_id=job.id, _anchor=f"job-{component}"), 303)


@bp.get("/jobs")
def my_jobs():
    """Today, Upcoming and Done today for the signed-in crew member."""
    return render_template("crew/my_jobs.html", board=my_jobs_board(current_user))


@bp.get(f"/jobs/<{ROW_ID}:job_id>")
def job(job_id):
    """The job card: where, what, photos, line items, notes; read-only once completed."""
    job = jobs.get_job_for(current_user, job_id)
    return render_template("crew/job.html", **job_context(job))


@bp.post(f"/jobs/<{ROW_ID}:job_id>/photos")
def add_photos(job_id):
    """One or more photos; crew.js sends one file per request and gets its thumbnail back."""
    job = jobs.get_job_for(current_user, job_id)
    try:
        result = photos.add_photos(job, request.files.getlist("photos"), by=actor())
    except ServiceError as error:
        db.session.rollback()
        if wants_fragment():
            return render_template("crew/_photo_refused.html", message=error.message), error.status
        return answer(job, "photos", error)
    db.session.commit()
    if wants_fragment():
        status = 422 if result.refused and not result.added else 200
        return render_template("crew/_photo_uploads.html", result=result, **job_context(job)), status
    for refusal in result.refused:
        flash(refusal.message, "error")
    if result.added:
        flash(f"{len(result.added)} photo{'s' if len(result.added) != 1 else ''} added.", "success")
    return redirect(url_for("crew.job", job_id=job.id, _anchor="job-photos"), 303)


@bp.post(f"/jobs/<{ROW_ID}:job_id>/photos/<{ROW_ID}:photo_id>/delete")
def remove_photo(job_id, photo_id):
    """Take a photo off the job before completion."""
    job = jobs.get_job_for(current_user, job_id)
    photo = photos.get_photo_for(current_user, photo_id, job_id=job.id)
    try:
        photos.remove_photo(photo, by=actor())
    except ServiceError as error:
        db.session.rollback()
        if wants_fragment():
            return render_template("crew/_photo.html", photo=photo, photo_error=error, **job_context(job)), error.status
        return answer(job, "photos", error)
    db.session.commit()
    if wants_fragment():
        return ""  # the photo's own box is replaced by nothing
    flash("Photo removed.", "success")
    return answer(job, "photos")


@bp.post(f"/jobs/<{ROW_ID}:job_id>/notes")
def add_note(job_id):
    """Append a note."""
    job = jobs.get_job_for(current_user, job_id)
    try:
        jobs.add_note(job, request.form.get("body"), by=actor())
    except ServiceError as error:
        db.session.rollback()
        return answer(job, "notes", error)
    db.session.commit()
    return answer(job, "notes")


@bp.post(f"/jobs/<{ROW_ID}:job_id>/items")
def add_item(job_id):
    """Add a line picked from the price list, with a quantity."""
    job = jobs.get_job_for(current_user, job_id)
    try:
        jobs.add_line_item_from_template(job, by=actor(), template_id=request.form.get("template_id"),
                                         quantity=request.form.get("quantity", "1"))
    except ServiceError as error:
        db.session.rollback()
        return answer(job, "items", error)
    db.session.commit()
    return answer(job, "items")


@bp.post(f"/jobs/<{ROW_ID}:job_id>/items/<{ROW_ID}:item_id>/delete")
def remove_item(job_id, item_id):
    """Take a line off the job before completion."""
    item = jobs.get_line_item_for(current_user, job_id, item_id)
    job = item.job
    try:
        jobs.remove_line_item(item, by=actor())
    except ServiceError as error:
        db.session.rollback()
        return answer(job, "items", error)
    db.session.commit()
    return answer(job, "items")


@bp.get(f"/jobs/<{ROW_ID}:job_id>/complete")
def confirm_complete(job_id):
    """The confirmation: items and total, or why the job cannot be completed yet."""
    job = jobs.get_job_for(current_user, job_id)
    if job.work_status == WorkStatus.COMPLETED:
        flash("This job is already completed.", "info")
        return redirect(url_for("crew.job", job_id=job.id), 303)
    return render_template("crew/complete.html", job=job)


@bp.post(f"/jobs/<{ROW_ID}:job_id>/complete")
def complete(job_id):
    """Complete the job (recording its billing trigger) and show the finished card."""
    job = jobs.get_job_for(current_user, job_id)
    try:
        job = jobs.complete_job(job, by=actor())
    except ServiceError as error:
        db.session.rollback()
        return render_template("crew/complete.html", job=job, error=error), error.status
    db.session.commit()
    flash("Job completed. The office has it from here.", "success")
    return redirect(url_for("crew.job", job_id=job.id), 303)
