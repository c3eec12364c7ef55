"""Serving stored photos to the people allowed to see their job."""
from flask import Blueprint, send_file
from flask_login import current_user, login_required

from portal.extensions import ROW_ID
from portal.photos import services as photos

bp = Blueprint("photos", __name__)


CACHE_SECONDS = 24 * 3600  # a photo id's bytes never change; only who may see it can


def photo_response(stream, content_type, etag, download_name):
    """The file, cacheable by this browser only, with a type the browser must not second-guess."""
    response = send_file(stream, mimetype=content_type, etag=etag, download_name=download_name, conditional=True)
    response.cache_control.no_cache = None
    response.cache_control.public = None
    response.cache_control.private = True
    response.cache_control.max_age = CACHE_SECONDS
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.get(f"/<{ROW_ID}:photo_id>")
@login_required
def original(photo_id):
    """The photo as uploaded."""
    photo = photos.get_photo_for(current_user, photo_id)
    suffix = photo.storage_key.rsplit(".", 1)[-1]
    return photo_response(photos.open_original(photo), photo.content_type, photo.sha256,
                          f"{photo.job.number or photo.job_id}-photo-{photo.id}.{suffix}")


@bp.get(f"/<{ROW_ID}:photo_id>/thumb")
@login_required
def thumbnail(photo_id):
    """A ~320 px upright JPEG without metadata, made on first request and then cached."""
    photo = photos.get_photo_for(current_user, photo_id)
    return photo_response(photos.open_thumbnail(photo), "image/jpeg", f"{photo.sha256}-thumb",
                          f"{photo.job.number or photo.job_id}-photo-{photo.id}-thumb.jpg")


@bp.get(f"/<{ROW_ID}:photo_id>/web")
@login_required
def web(photo_id):
    """A 1600 px upright JPEG without metadata (the copy the proof PDF shows)."""
    photo = photos.get_photo_for(current_user, photo_id)
    return photo_response(photos.open_web_copy(photo), "image/jpeg", f"{photo.sha256}-web",
                          f"{photo.job.number or photo.job_id}-photo-{photo.id}.jpg")
