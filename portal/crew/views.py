"""Crew screens: my jobs and closing one out, on a phone."""
from flask import Blueprint, render_template
from flask_login import current_user

from portal.auth.models import Role
from portal.auth.services import roles_required

bp = Blueprint("crew", __name__)


@bp.route("/jobs")
@roles_required(Role.CREW)
def my_jobs():
    return render_template("crew/my_jobs.html", user=current_user)
