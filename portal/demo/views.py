"""Development-only pages: `/_demo/outbox` shows what customers were emailed in `make demo`.

Registered only when the config sets DEMO_PAGES (only DevelopmentConfig does), and the
blueprint refuses every request otherwise, so production never has these pages.
"""
import io

from flask import Blueprint, abort, current_app, render_template, send_file

from portal.auth.models import STAFF_ROLES
from portal.auth.services import roles_required
from portal.demo import outbox

bp = Blueprint("demo", __name__)
URL_PREFIX = "/_demo"


def init_app(app):
    """Register the demo pages on an app whose config enables them; do nothing on any other."""
    if app.config.get("DEMO_PAGES") and "demo" not in app.blueprints:
        app.register_blueprint(bp, url_prefix=URL_PREFIX)


@bp.before_request
def demo_apps_only():
    """A second lock: even if registered by mistake, a non-demo app answers 404."""
    if not current_app.config.get("DEMO_PAGES"):
        abort(404)


@bp.before_request
@roles_required(*STAFF_ROLES)
def require_staff():
    """Caught mail holds customers' bills: office staff and owners only."""


@bp.get("/outbox")
def outbox_list():
    """Every caught message, newest first."""
    return render_template("demo/outbox.html", messages=outbox.caught_messages(), outbox_dir=outbox.outbox_dir())


@bp.get("/outbox/<name>")
def outbox_message(name):
    """One caught message as the customer sees it, with its text part and attachments."""
    message = outbox.get_caught_message(name)
    return render_template("demo/message.html", name=name, message=message, html=outbox.html_for_frame(message),
                           text=outbox.text_body(message), parts=outbox.parts_of(message))


@bp.get("/outbox/<name>/<int:index>")
def outbox_part(name, index):
    """One part of a caught message (the proof PDF, a photo), as a download."""
    data, content_type, filename = outbox.get_part(outbox.get_caught_message(name), index)
    response = send_file(io.BytesIO(data), mimetype=content_type, as_attachment=True, download_name=filename,
                         etag=False)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "private, no-store"
    return response
