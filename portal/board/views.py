"""The live job board: the page, and the poll that answers an unchanged board before rendering anything."""
from flask import Blueprint, render_template, request

from portal.auth.models import STAFF_ROLES
from portal.auth.services import roles_required
from portal.board.services import board, board_version, payment_timeline, source_label
from portal.office.business_time import format_business_time

bp = Blueprint("board", __name__)
POLL_SECONDS = 3


@bp.before_request
@roles_required(*STAFF_ROLES)
def require_staff():
    """The board is for office staff and owners; others get 404, as if it were not there."""


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


@bp.get("")
def page():
    version = board_version()
    response = render_template("board/board.html", groups=board(), version=version)
    return response, {"ETag": version, "Cache-Control": "no-cache"}


@bp.get("/poll")
def poll():
    """The board component, or 204 and no body when nothing changed since the version the page holds."""
    version = board_version()
    if request.headers.get("If-None-Match") == version:
        # 204, not 304: the layout's htmx responseHandling swaps every [23].. answer except 204,
        # and a 304's empty body would blank the board. See base.html.
        return "", 204, {"ETag": version, "Cache-Control": "no-cache"}
    return (render_template("board/_board.html", groups=board(), version=version),
            {"ETag": version, "Cache-Control": "no-cache"})
