"""RQ tasks for photos: plain functions that take ids and reload rows.

Enqueued by dotted name (portal.queue.enqueue), so only the worker imports Pillow's decoders here.
"""
from sqlalchemy import select

from portal.extensions import db
from portal.jobs.models import Photo
from portal.photos.derivatives import derivative_keys, ensure_derivatives
from portal.photos.storage import get_storage


def make_photo_derivatives(photo_id):
    """The web copy and thumbnail of an uploaded photo (issue 4, section 1)."""
    photo = db.session.get(Photo, photo_id)
    if photo is None:
        return "photo removed"  # taken off the job before the worker reached it
    storage = get_storage()
    original_key = photo.storage_key
    try:
        ensure_derivatives(photo, storage)
    except FileNotFoundError:
        if still_stored(photo_id):
            raise
        return "photo removed"
    if not still_stored(photo_id):
        # Removed while we were decoding: its files were deleted before ours were written.
        for key in derivative_keys(original_key):
            storage.delete(key)
        return "photo removed"
    return "made"


def still_stored(photo_id):
    """Whether the photo's row still exists, read afresh rather than from this session's cache."""
    db.session.rollback()
    return db.session.scalar(select(Photo.id).where(Photo.id == photo_id)) is not None
