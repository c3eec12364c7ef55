"""Errors the services raise; views turn them into a flash, a form error or JSON."""
from flask import abort, current_app, jsonify, render_template, request


class ServiceError(Exception):
    """A rule refused the change; `fields` maps field names to messages."""

    status = 400

    def __init__(self, message, fields=None):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}


class TransitionNotAllowed(ServiceError):
    """The job's current state does not allow this (e.g. completing a completed job)."""

    status = 409


class Unprocessable(ServiceError):
    """Well-formed input with values that cannot be used (e.g. a negative quantity)."""

    status = 422


def wants_json():
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def _error_response(error, status, message):
    if wants_json():
        response = jsonify(error={"status": status, "message": message})
    else:
        response = current_app.make_response(render_template("errors/error.html", status=status, message=message))
    response.status_code = status
    allow = getattr(error, "valid_methods", None)
    if status == 405 and allow:
        response.headers["Allow"] = ", ".join(allow)
    return response


def refuse_nul_bytes():
    """A 400 for a NUL character in a GET's filters or a posted form: no one types it, and PostgreSQL refuses it."""
    # Without this a NUL in a search box was a 500 (psycopg cannot send it); see tests/test_injection.py.
    # A POST's query string carries only the sign-in's `next`, which safe_next already judges.
    values = [*request.args.values(), *request.args.keys()] if request.method in ("GET", "HEAD") else []
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        values += [*request.form.values(), *request.form.keys()]
    if any("\x00" in value for value in values):
        abort(400)


def init_app(app):
    app.before_request(refuse_nul_bytes)
    for status, message in (
        (400, "That request could not be understood."),
        (401, "Please sign in."),
        (403, "You are not allowed to do that."),
        (404, "Nothing here, or it is not yours to see."),
        (405, "That action is not allowed here."),
        (413, "That upload is too large."),
        (429, "Too many attempts. Wait a minute and try again."),
        (500, "Something went wrong on our side. It has been logged."),
    ):
        app.register_error_handler(status, lambda error, s=status, m=message: _error_response(error, s, m))
