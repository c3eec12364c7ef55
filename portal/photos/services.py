"""The rules of a job's photos: who may add, remove and see them, and where their files go."""
import logging
from dataclasses import dataclass, field

from flask import abort
from sqlalchemy import event
from sqlalchemy.orm import Session

from portal.audit.services import record
from portal.auth.models import Role
from portal.errors import ServiceError, Unprocessable
from portal.extensions import db
from portal.jobs.models import Photo
from portal.jobs.services import get_job_for, mark_started, require_crew_editable
from portal.photos.derivatives import derivative_keys, ensure_derivatives, ensure_thumbnail
from portal.photos.storage import get_storage
from portal.photos.validation import check_photo
from portal.queue import enqueue_after_commit

log = logging.getLogger(__name__)
FILES_TO_DELETE = "closeout_photo_files_to_delete"  # key in Session.info


@dataclass
class UploadResult:
    """What happened to each file of one upload: the photos kept and the refusals, in order."""

    added: list = field(default_factory=list)
    refused: list = field(default_factory=list)


def require_photos_editable(job, by):
    """Crews add and remove photos until the job is completed; the office at any time."""
    if by.user is not None and by.user.role == Role.CREW:
        require_crew_editable(job)


def add_photo(job, upload, *, by):
    """Check one uploaded file and keep it on the job; a refusal leaves the job untouched."""
    require_photos_editable(job, by)
    checked = check_photo(upload.stream, upload.filename)
    if any(photo.sha256 == checked.sha256 for photo in job.photos):
        # A retry on a flaky connection often re-sends a photo that already landed.
        raise Unprocessable(f"{checked.filename} is already on this job.", {"photos": "duplicate"})
    storage = get_storage()
    key = storage.save(checked.data, checked.format.suffix)
    photo = Photo(
        job=job,
        storage_key=key,
        content_type=checked.format.content_type,
        original_filename=checked.filename[:255],
        size_bytes=checked.size,
        width=checked.width,
        height=checked.height,
        sha256=checked.sha256,
        taken_at=checked.taken_at,
        uploaded_by=by.user,
    )
    db.session.add(photo)
    db.session.flush()
    # The worker makes the web copy and thumbnail once the row is committed (issue 4, section 1).
    enqueue_after_commit(db.session, "portal.photos.tasks.make_photo_derivatives", photo.id)
    mark_started(job, by)
    record(by, "photo.added", photo, job=job, new=checked.filename,
           detail={"sha256": checked.sha256, "size": checked.size, "content_type": checked.format.content_type})
    return photo


def add_photos(job, uploads, *, by):
    """Check each file of a multi-file upload on its own: good ones are kept, bad ones reported."""
    require_photos_editable(job, by)
    uploads = [upload for upload in uploads if upload.filename]
    if not uploads:
        raise ServiceError("Choose at least one photo.", {"photos": "required"})
    result = UploadResult()
    for upload in uploads:
        try:
            result.added.append(add_photo(job, upload, by=by))
        except Unprocessable as refusal:
            result.refused.append(refusal)
    return result


def remove_photo(photo, *, by):
    """Take a photo off the job; its files are deleted only once the removal is committed."""
    job = photo.job
    require_photos_editable(job, by)
    record(by, "photo.removed", photo, job=job, old=photo.original_filename, detail={"sha256": photo.sha256})
    delete_files_after_commit(get_storage(), [photo.storage_key, *derivative_keys(photo.storage_key)])
    job.photos.remove(photo)
    db.session.delete(photo)


def get_photo_for(user, photo_id, *, job_id=None):
    """The photo, if this user may see its job (and it belongs to job_id when given); 404 otherwise."""
    photo = db.session.get(Photo, photo_id)
    if photo is None or (job_id is not None and photo.job_id != job_id):
        abort(404)
    get_job_for(user, photo.job_id)
    return photo


def open_original(photo):
    """The stored original, opened for reading."""
    return get_storage().open(photo.storage_key)


def open_thumbnail(photo):
    """The photo's JPEG thumbnail, made and cached on first use, opened for reading."""
    storage = get_storage()
    return storage.open(ensure_thumbnail(storage, photo.storage_key))


def open_web_copy(photo):
    """The photo's 1600 px JPEG web copy, made on first use if the worker has not yet, opened for reading."""
    web_copy, _ = ensure_derivatives(photo)
    return get_storage().open(web_copy)


def delete_files_after_commit(storage, keys):
    """Queue stored files for deletion when the current transaction commits.

    Deleting first and then failing to commit would leave a row pointing at nothing;
    this way a failure leaves at worst an orphan file, which loses nothing.
    """
    db.session.info.setdefault(FILES_TO_DELETE, []).extend((storage, key) for key in keys)


@event.listens_for(Session, "after_commit")
def _delete_queued_files(session):
    for storage, key in session.info.pop(FILES_TO_DELETE, []):
        try:
            storage.delete(key)
        except OSError:
            log.warning("could not delete stored photo file %s; it is now an orphan", key, exc_info=True)


@event.listens_for(Session, "after_soft_rollback")
def _forget_queued_files(session, previous_transaction):
    if previous_transaction.parent is None:  # the whole transaction, not a savepoint, was undone
        session.info.pop(FILES_TO_DELETE, None)
