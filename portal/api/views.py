"""The JSON API for other systems, under /api/v1, with Bearer tokens (see docs/api.md)."""
from flask import Blueprint, g, jsonify, request, url_for
from werkzeug.exceptions import HTTPException

from portal.api import services
from portal.api.auth import token_required
from portal.api.schemas import client_payload, completion_payload, job_filters, job_payload, json_body, page_args
from portal.api.serializers import client_json, job_json, page_json
from portal.audit.services import Actor
from portal.errors import ServiceError
from portal.extensions import db

bp = Blueprint("api", __name__)

# Same words as the app-wide handlers in portal/errors.py, which answer routing 404/405 under /api/.
HTTP_MESSAGES = {
    400: "That request could not be understood.",
    404: "Nothing here, or it is not yours to see.",
    405: "That action is not allowed here.",
    413: "That request is too large.",
}


def error_response(status, message, fields=None, extra=None):
    """The API's one error shape: {"error": {"status", "message", "fields"?}}."""
    body = {"status": status, "message": message}
    if fields:
        body["fields"] = fields
    body.update(extra or {})
    response = jsonify(error=body)
    response.status_code = status
    return response


@bp.errorhandler(ServiceError)
def service_error(error):
    db.session.rollback()
    return error_response(error.status, error.message, error.fields, getattr(error, "extra", None))


@bp.errorhandler(HTTPException)
def http_error(error):
    db.session.rollback()
    response = error_response(error.code, HTTP_MESSAGES.get(error.code, error.name))
    if error.code == 405 and error.valid_methods:
        response.headers["Allow"] = ", ".join(error.valid_methods)
    return response


def token_actor():
    return Actor.for_token(g.api_token)


def created(body, location):
    response = jsonify(body)
    response.status_code = 201
    response.headers["Location"] = location
    return response


@bp.get("/clients")
@token_required
def list_clients():
    limit, after = page_args(request.args)
    rows, has_more = services.list_clients(limit=limit, after=after)
    return page_json(rows, has_more, client_json)


@bp.post("/clients")
@token_required
def create_client():
    client = services.create_client_with_sites(by=token_actor(), **client_payload(json_body()))
    db.session.commit()
    return created(client_json(services.load_client(client.id)), url_for("api.get_client", client_id=client.id))


@bp.get("/clients/<int:client_id>")
@token_required
def get_client(client_id):
    return client_json(services.load_client(client_id))


@bp.get("/jobs")
@token_required
def list_jobs():
    filters, limit, after = job_filters(request.args)
    rows, has_more = services.list_jobs(limit=limit, after=after, **filters)
    return page_json(rows, has_more, job_json)


@bp.post("/jobs")
@token_required
def create_job():
    job = services.create_job_for_api(by=token_actor(), **job_payload(json_body()))
    db.session.commit()
    return created(job_json(services.load_job(job.id)), url_for("api.get_job", job_id=job.id))


@bp.get("/jobs/<int:job_id>")
@token_required
def get_job(job_id):
    return job_json(services.load_job(job_id))


@bp.post("/jobs/<int:job_id>/complete")
@token_required
def complete_job(job_id):
    job = services.load_job(job_id)
    services.complete_job_for_api(job, by=token_actor(), **completion_payload(json_body(required=False)))
    db.session.commit()
    return job_json(services.load_job(job_id))
