"""What the API does for other systems, built on the shared job services.

A token is the business's own integration, so it sees every client and job; the helpers
here load by id and answer 404 for ids that name nothing.
"""
from flask import abort
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from portal.auth.models import Role, User
from portal.clients.models import Client, Site
from portal.clients.services import create_client, create_site
from portal.errors import ServiceError, TransitionNotAllowed, Unprocessable
from portal.extensions import db, is_row_id
from portal.jobs.models import Job, LineItemTemplate, WorkStatus
from portal.jobs.services import add_line_item, add_planned_line_item, complete_job, lock_job, schedule_job

JOB_LOAD_OPTIONS = (
    selectinload(Job.client),
    selectinload(Job.site),
    selectinload(Job.crew),
    selectinload(Job.completed_by),
    selectinload(Job.line_items),
    selectinload(Job.billing_records),
)


class DuplicateJob(ServiceError):
    """The client already has a job with this external_ref; retries must not create a second one."""

    status = 409

    def __init__(self, existing):
        super().__init__(f"Job {existing.number} already has this external_ref for this client.",
                         {"external_ref": "already used for this client"})
        self.extra = {"existing_job_id": existing.id}


def load_client(client_id):
    """The client with this id, with its sites; 404 when there is none."""
    if not is_row_id(client_id):
        abort(404)
    client = db.session.scalar(select(Client).options(selectinload(Client.sites)).where(Client.id == client_id))
    if client is None:
        abort(404)
    return client


def load_job(job_id):
    """The job with this id, with everything its JSON shows; 404 when there is none."""
    if not is_row_id(job_id):
        abort(404)
    job = db.session.scalar(select(Job).options(*JOB_LOAD_OPTIONS).where(Job.id == job_id))
    if job is None:
        abort(404)
    return job


def _page(query, model, limit, after):
    """One page by ascending id, and whether another follows; one row more than asked tells."""
    rows = db.session.scalars(query.where(model.id > after).order_by(model.id).limit(limit + 1)).all()
    return rows[:limit], len(rows) > limit


def list_clients(*, limit, after):
    """A page of clients, oldest first."""
    return _page(select(Client).options(selectinload(Client.sites)), Client, limit, after)


def list_jobs(*, limit, after, work_status=None, billing_status=None, updated_since=None, client_id=None,
              external_ref=None):
    """A page of jobs matching every filter given, oldest first."""
    query = select(Job).options(*JOB_LOAD_OPTIONS)
    if work_status is not None:
        query = query.where(Job.work_status == work_status)
    if billing_status is not None:
        query = query.where(Job.billing_status == billing_status)
    if updated_since is not None:
        # Inclusive, so a poller that passes its last poll time never misses a row changed that instant.
        query = query.where(Job.updated_at >= updated_since)
    if client_id is not None:
        query = query.where(Job.client_id == client_id)
    if external_ref is not None:
        query = query.where(Job.external_ref == external_ref)
    return _page(query, Job, limit, after)


def create_client_with_sites(*, by, sites=(), **fields):
    """A new client through the office's rules (policy, emails, currency), with its sites."""
    client = create_client(by=by, **fields)
    for index, site in enumerate(sites):
        try:
            create_site(client, by=by, **site)
        except Unprocessable as error:
            raise Unprocessable(error.message, {f"sites[{index}].{field}": message
                                                for field, message in error.fields.items()}) from None
    return client


def _crew_members(crew_ids, crew_emails):
    """Active crew accounts named by id or email; any name that is not one is refused."""
    members, fields = [], {}
    if crew_ids:
        found = db.session.scalars(select(User).where(User.id.in_(crew_ids))).all()
        by_id = {user.id: user for user in found if user.role == Role.CREW and user.active}
        missing = [str(crew_id) for crew_id in crew_ids if crew_id not in by_id]
        if missing:
            fields["crew_ids"] = "no active crew member with id " + ", ".join(missing)
        members += by_id.values()
    if crew_emails:
        wanted = {email.strip().lower() for email in crew_emails}
        found = db.session.scalars(select(User).where(func.lower(User.email).in_(wanted))).all()
        by_email = {user.email.lower(): user for user in found if user.role == Role.CREW and user.active}
        missing = sorted(wanted - by_email.keys())
        if missing:
            fields["crew_emails"] = "no active crew member with email " + ", ".join(missing)
        members += by_email.values()
    if fields:
        raise Unprocessable("Check the crew listed.", fields)
    return list(dict.fromkeys(members))


def _existing_job(client_id, external_ref):
    if external_ref is None:
        return None
    return db.session.scalar(select(Job).where(Job.client_id == client_id, Job.external_ref == external_ref))


def _add_lines(job, lines, *, by, add):
    """Add each line with `add`, naming a refused one by its position in the request."""
    templates = {}
    template_ids = {line["template_id"] for line in lines if line["template_id"] is not None}
    if template_ids:
        templates = {row.id: row for row in db.session.scalars(select(LineItemTemplate).where(LineItemTemplate.id.in_(template_ids)))}
    fields = {}
    for index, line in enumerate(lines):
        line = dict(line)
        template_id = line.pop("template_id")
        if template_id is not None and template_id not in templates:
            fields[f"line_items[{index}].template_id"] = "no such template"
            continue
        try:
            add(job, by=by, template=templates.get(template_id), **line)
        except Unprocessable as error:
            fields.update({f"line_items[{index}].{field}": message for field, message in error.fields.items()})
    if fields:
        raise Unprocessable("Check the line items listed; none were added.", fields)


def create_job_for_api(*, by, client_id, site_id=None, crew_ids=(), crew_emails=(), line_items=(), **job_fields):
    """A new job for a client, with its crew and the lines already priced; it stays scheduled."""
    client = db.session.get(Client, client_id)
    if client is None:
        raise Unprocessable("No client has that id.", {"client_id": "no such client"})
    site = None
    if site_id is not None:
        site = db.session.get(Site, site_id)
        if site is None:
            raise Unprocessable("No site has that id.", {"site_id": "no such site"})
    crew = _crew_members(crew_ids, crew_emails)
    existing = _existing_job(client.id, job_fields.get("external_ref"))
    if existing is not None:
        raise DuplicateJob(existing)
    try:
        # The office's booking rules (schedule, reference, crew) apply to integrations too.
        job = schedule_job(client, by=by, site=site, crew=crew, **job_fields)
    except IntegrityError:
        # Two retries of one ticket raced past the check above; the database kept the first.
        # The failed flush has spoiled the transaction, so roll back before looking the winner up.
        db.session.rollback()
        existing = _existing_job(client_id, job_fields.get("external_ref"))
        if existing is None:
            raise
        raise DuplicateJob(existing) from None
    _add_lines(job, line_items, by=by, add=add_planned_line_item)
    return job


def complete_job_for_api(job, *, by, line_items=(), no_charge_reason=None):
    """Add the final lines and complete the job in one transaction: a refusal leaves neither behind."""
    job = lock_job(job)
    # Checked before the lines so that a second completion is a 409 whatever lines it carries.
    if job.work_status == WorkStatus.COMPLETED:
        raise TransitionNotAllowed("This job is already completed.")
    _add_lines(job, line_items, by=by, add=add_line_item)
    return complete_job(job, by=by, no_charge_reason=no_charge_reason)
