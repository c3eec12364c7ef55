"""The live job board: the page, and the poll that answers an unchanged board before rendering anything."""
from flask import Blueprint, abort, render_template, request

from portal.auth.models import STAFF_ROLES
from portal.auth.services import roles_required
from portal.board.fast_poll import UNRESOLVED, fresh_board_version, poll_version, poller_role
from portal.board.services import action_label, board, payment_timeline, source_label
from portal.extensions import login_manager
from portal.timeutil import format_business_time

bp = Blueprint("board", __name__)
POLL_SECONDS = 3


@bp.before_request
def require_staff():
    """The board is for office staff and owners; others get 404, as if it were not there."""
    if request.endpoint == "board.poll":
        # The poll checks the role from a short-lived cache instead of loading the user row: see fast_poll.
        role = poller_role()
        if role is None:
            return login_manager.unauthorized()
        if role is not UNRESOLVED:
            if role not in STAFF_ROLES:
                abort(404)
            return None
    return require_staff_from_user_row()


@roles_required(*STAFF_ROLES)
def require_staff_from_user_row():
    """Every board route but the poll, and the poll when the session alone cannot say who is asking."""


@bp.context_processor
def board_template_helpers():
    return {"business_time": format_business_time, "poll_seconds": POLL_SECONDS}


@bp.app_template_filter("payment_timeline")
def payment_timeline_filter(trail):
    """`trail | payment_timeline` on the office job page: its billing and payment entries."""
    return payment_timeline(trail)


@bp.app_template_filter("audit_source")
def audit_source_filter(entry):
    return source_label(entry)


@bp.app_template_filter("audit_action")
def audit_action_filter(entry):
    return action_label(entry)


@bp.get("")
def page():
    version = fresh_board_version()
    response = render_template("board/board.html", groups=board(), version=version)
    return response, {"ETag": version, "Cache-Control": "no-cache"}


@bp.get("/poll")
def poll():
    """The board component, or 204 and no body when nothing changed since the version the page holds."""
    version, changed = poll_version(request.headers.get("If-None-Match"))
    if not changed:
        # 204, not 304: the layout's htmx responseHandling swaps every [23].. answer except 204,
        # and a 304's empty body would blank the board. See base.html.
        return "", 204, {"ETag": version, "Cache-Control": "no-cache"}
    return (render_template("board/_board.html", groups=board(), version=version),
            {"ETag": version, "Cache-Control": "no-cache"})
