"""Errors the services raise; views turn them into a flash, a form error or JSON."""
from flask import current_app, jsonify, render_template, request


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


def init_app(app):
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
