"""Office screens: jobs, clients and their billing policy, sites, line-item templates."""
from flask import Blueprint, render_template

from portal.auth.models import STAFF_ROLES
from portal.auth.services import roles_required

bp = Blueprint("office", __name__)


@bp.route("/jobs")
@roles_required(*STAFF_ROLES)
def jobs():
    return render_template("office/jobs.html")


@bp.route("/clients")
@roles_required(*STAFF_ROLES)
def clients():
    return render_template("office/clients.html")


@bp.route("/templates")
@roles_required(*STAFF_ROLES)
def templates():
    return render_template("office/templates.html")
