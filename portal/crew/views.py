"""Crew screens: my jobs and closing one out, on a phone.

Every action is a plain form post that works without JavaScript (crews are on
flaky phones); htmx and crew.js requests get the changed component back instead
of a redirect to the page. Changes sent with a phone's change id (offline.js's
queue, issue 9) are applied once: a replay gets the original answer again.
"""
from flask import Blueprint, current_app, flash, jsonify, make_response, redirect, render_template, request, url_for
from flask_login import current_user

from portal.audit.services import Actor
from portal.auth.models import Role
from portal.auth.services import roles_required
from portal.crew import services as crew
from portal.crew.models import ChangeKind
from portal.crew.services import my_jobs_board
from portal.errors import ServiceError
from portal.extensions import ROW_ID, db
from portal.jobs import services as jobs
from portal.jobs.models import Photo, WorkStatus
from portal.photos import services as photos
from portal.photos.derivatives import JPEG_QUALITY, WEB_EDGE
from portal.photos.services import UploadResult
from portal.photos.validation import describe_bytes
from portal.timeutil import business_zone

bp = Blueprint("crew", __name__)

# Ids are PostgreSQL integers: a larger number in a URL is a 404, not a database error.


# The manifest and the service worker install the app; they hold nothing of anyone's, and a browser
# fetches the manifest without cookies, so they are served to everyone.
INSTALL_ENDPOINTS = ("crew.manifest", "crew.service_worker")


@bp.before_request
def crew_only():
    """Every crew route but the app's two install files is for crew members; anyone else gets 404."""
    if request.endpoint not in INSTALL_ENDPOINTS:
        return require_crew()
    return None


@roles_required(Role.CREW)
def require_crew():
    """Lets crew members through (roles_required answers everyone else)."""


@bp.after_request
def name_the_user(response):
    """Crew pages say whose they are, so the service worker caches them per user and drops them for anyone else."""
    if current_user.is_authenticated and current_user.role == Role.CREW:
        response.headers["X-Closeout-User"] = str(current_user.id)
    return response


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
        "reopens": crew.reopen_count(job),
        # The phone scales queued photos to the web copy the server keeps (portal/photos/derivatives.py).
        "photo_edge": WEB_EDGE,
        "photo_quality": JPEG_QUALITY / 100,
        **extra,
    }


def answer(job, component, error=None):
    """After a change: the component (htmx), or the page again (refused) or a redirect to it (done)."""
    if wants_fragment():
        response = make_response(render_template(f"crew/_{component}.html", **job_context(job, error=error)),
                                 error.status if error else 200)
    elif error is not None:
        context = job_context(job, errors={component: error}, form=request.form)
        response = make_response(render_template("crew/job.html", **context), error.status)
    else:
        return redirect(url_for("crew.job", job_id=job.id, _anchor=f"job-{component}"), 303)
    if isinstance(error, crew.ReopenedMeanwhile):
        # The queue re-sends with this count once the crew member has looked at the reopened card.
        response.headers[crew.SEEN_REOPENS_HEADER] = str(crew.reopen_count(job))
    return response


def change_from_request():
    """The phone's change id and the reopen count its card showed (headers from offline.js, or form fields)."""
    change_id = crew.parse_change_id(request.headers.get(crew.CHANGE_ID_HEADER) or request.form.get("client_change_id"))
    seen = crew.parse_seen_reopens(request.headers.get(crew.SEEN_REOPENS_HEADER) or request.form.get("seen_reopens"))
    return change_id, seen


def apply_once(job, kind, apply):
    """Apply the request's change once per change id; (change, replayed), see crew.services.apply_change."""
    return crew.apply_change(current_user, job, kind, *change_from_request(), apply)


def acknowledged(response, change, replayed):
    """Tell the phone's queue its change is stored: applied now, or replayed from the first time."""
    response = make_response(response)
    if change is not None:
        response.headers[crew.CHANGE_STATUS_HEADER] = "replayed" if replayed else "applied"
    return response


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
        if change_from_request()[0] is not None:
            return add_queued_photo(job)
        result = photos.add_photos(job, request.files.getlist("photos"), by=actor())
    except ServiceError as error:
        db.session.rollback()
        if wants_fragment():
            return photo_refused(job, error)
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


def add_queued_photo(job):
    """One photo from a phone's queue: stored once per change id, its thumbnail answered again on a replay."""
    upload = request.files.get("photos")
    if upload is None or not upload.filename:
        raise ServiceError("Choose at least one photo.", {"photos": "required"})
    change, replayed = apply_once(job, ChangeKind.PHOTO, lambda: photos.add_photo(job, upload, by=actor()))
    db.session.commit()
    photo = db.session.get(Photo, change.result_id)
    if not wants_fragment():
        return acknowledged(redirect(url_for("crew.job", job_id=job.id, _anchor="job-photos"), 303), change, replayed)
    if photo is None or photo.job_id != job.id:  # removed since it was first sent: the photos as they are now
        return acknowledged(answer(job, "photos"), change, replayed)
    return acknowledged(render_template("crew/_photo_uploads.html", result=UploadResult(added=[photo]),
                                        **job_context(job)), change, replayed)


def photo_refused(job, error):
    """A refused upload's answer for crew.js and the queue: the refusal in place of the pending thumbnail."""
    response = make_response(render_template("crew/_photo_refused.html", message=error.message), error.status)
    if isinstance(error, crew.ReopenedMeanwhile):
        response.headers[crew.SEEN_REOPENS_HEADER] = str(crew.reopen_count(job))
    return response


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
        change, replayed = apply_once(job, ChangeKind.NOTE, lambda: jobs.add_note(job, request.form.get("body"), by=actor()))
    except ServiceError as error:
        db.session.rollback()
        return answer(job, "notes", error)
    db.session.commit()
    return acknowledged(answer(job, "notes"), change, replayed)


@bp.post(f"/jobs/<{ROW_ID}:job_id>/items")
def add_item(job_id):
    """Add a line picked from the price list, with a quantity."""
    job = jobs.get_job_for(current_user, job_id)
    try:
        change, replayed = apply_once(job, ChangeKind.ITEM, lambda: jobs.add_line_item_from_template(
            job, by=actor(), template_id=request.form.get("template_id"), quantity=request.form.get("quantity", "1")))
    except ServiceError as error:
        db.session.rollback()
        return answer(job, "items", error)
    db.session.commit()
    return acknowledged(answer(job, "items"), change, replayed)


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
    return render_template("crew/complete.html", job=job, reopens=crew.reopen_count(job))


@bp.post(f"/jobs/<{ROW_ID}:job_id>/complete")
def complete(job_id):
    """Complete the job (recording its billing trigger) and show the finished card.

    A replayed completion (same change id) answers the first one's success and completes nothing again.
    """
    job = jobs.get_job_for(current_user, job_id)
    try:
        change, replayed = apply_once(job, ChangeKind.COMPLETE, lambda: jobs.complete_job(job, by=actor()))
    except ServiceError as error:
        db.session.rollback()
        if wants_fragment():
            return answer(job, "job_summary", error)
        return render_template("crew/complete.html", job=job, error=error, reopens=crew.reopen_count(job)), error.status
    db.session.commit()
    if wants_fragment():
        return acknowledged(answer(job, "job_summary"), change, replayed)
    if not replayed:
        flash("Job completed. The office has it from here.", "success")
    return acknowledged(redirect(url_for("crew.job", job_id=job.id), 303), change, replayed)


# --- Installing the app (issue 9) -------------------------------------------------------------------

@bp.get("/manifest.webmanifest")
def manifest():
    """The web app manifest: installable, standalone, opening on My jobs."""
    response = jsonify({
        "name": f"{current_app.config['BUSINESS_NAME']} crew",
        "short_name": "Closeout",
        "id": url_for("crew.my_jobs"),
        "start_url": url_for("crew.my_jobs"),
        "scope": app_scope(),
        "display": "standalone",
        "orientation": "portrait",
        "background_color": "#f4f6f5",
        "theme_color": "#0f5132",
        "icons": [icon_entry(name, size, purpose) for name, size, purpose in APP_ICONS],
    })
    response.mimetype = "application/manifest+json"
    response.cache_control.max_age = 3600
    return response


@bp.get("/sw.js")
def service_worker():
    """The service worker, named for this deploy's files; from /crew/ its scope is the crew screens only."""
    source = render_template("crew/sw.js", version=crew.offline_version(), scope=app_scope(),
                             static_files=[url_for("static", filename=name) for name in OFFLINE_STATIC_FILES])
    response = make_response(source)
    response.mimetype = "text/javascript"
    # Browsers check for a new worker on every visit; no-cache makes that check reach us.
    response.headers["Cache-Control"] = "no-cache"
    return response


APP_ICONS = (("crew-192.png", 192, "any"), ("crew-512.png", 512, "any"),
             ("crew-maskable-192.png", 192, "maskable"), ("crew-maskable-512.png", 512, "maskable"))


def icon_entry(name, size, purpose):
    """One of the manifest's icons (PNGs under static/icons/)."""
    return {"src": url_for("static", filename=f"icons/{name}"), "sizes": f"{size}x{size}", "type": "image/png",
            "purpose": purpose}


def app_scope():
    """/crew/: the service worker's folder, which is its scope and the installed app's."""
    return url_for("crew.service_worker").rsplit("/", 1)[0] + "/"


OFFLINE_STATIC_FILES = ("closeout.css", "offline.css", "htmx-2.0.11.min.js", "crew.js", "offline.js",
                        "icons/crew-192.png")
