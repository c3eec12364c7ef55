"""The dashboard, exports and audit log, under /office/dashboard.

Office staff and owners reach the dashboard (the office sees its operational parts, see
dashboard.services); the exports and the audit log are the owner's. Everyone else gets 404.
"""
from flask import Blueprint, Response, render_template, request, stream_with_context, url_for
from flask_login import current_user

from portal.auth.models import STAFF_ROLES, Role
from portal.auth.services import roles_required
from portal.clients.services import client_choices
from portal.dashboard import charts
from portal.dashboard.audit_log import audit_log_page, people
from portal.dashboard.exports import export_filename, export_rows
from portal.dashboard.forms import EXPORT_KINDS, AuditFilterForm, DashboardFilterForm, ExportForm
from portal.dashboard.services import AGING_BUCKETS, FIGURE_LABELS, business_today, dashboard_for, format_duration
from portal.extensions import row_id_arg
from portal.jobs.services import assignable_crew
from portal.timeutil import format_business_time

bp = Blueprint("dashboard", __name__)
owner_only = roles_required(Role.OWNER)


@bp.before_request
@roles_required(*STAFF_ROLES)
def require_staff():
    """Staff only; the exports and the audit log also carry owner_only."""


@bp.context_processor
def dashboard_template_helpers():
    return {"business_time": format_business_time, "format_duration": format_duration, "page_url": page_url,
            "audit_source": audit_source}


def audit_source(entry):
    """An audit entry's source as the log's filter names it."""
    return entry.source.value.replace("_", " ").capitalize()


@bp.app_template_filter("figure_label")
def figure_label(key):
    """`'overdue' | figure_label` on the office job list: the dashboard's name for a figure."""
    return FIGURE_LABELS.get(key, key)


def page_url(page):
    """This screen's URL with the same filters, on another page."""
    return url_for(request.endpoint, **{**request.args.to_dict(), "page": page})


def figure_url(key, dashboard):
    """The office job list showing exactly the jobs a figure counts."""
    period, scope = dashboard.period, dashboard.scope
    return url_for("office.jobs", figure=key, period_from=period.first_day.isoformat(),
                   period_to=period.last_day.isoformat(), client=scope.client_id or None, crew=scope.crew_id or None)


@bp.get("")
def page():
    filters = DashboardFilterForm(formdata=request.args)
    filters.set_choices(client_choices(), assignable_crew())
    filters.validate()
    dashboard = dashboard_for(current_user, filters.chosen_period(business_today()), filters.chosen_scope())
    urls = {bucket.key: figure_url(bucket.key, dashboard) for bucket in AGING_BUCKETS}
    context = {
        "filters": filters,
        "dashboard": dashboard,
        "figure_url": figure_url,
        "aging": charts.aging_rows(dashboard.aging, urls),
        "trend": charts.trend_chart(dashboard.trend_unit, dashboard.trend) if dashboard.trend is not None else None,
    }
    return render_template("dashboard/dashboard.html", **context)


@bp.get("/exports")
@owner_only
def exports():
    form = ExportForm(formdata=request.args)
    form.validate()
    return render_template("dashboard/exports.html", form=form, kinds=EXPORT_KINDS,
                           period=form.chosen_period(business_today()))


@bp.get("/exports/download")
@owner_only
def export():
    """A CSV for the range, streamed: the response starts before the last row is read."""
    form = ExportForm(formdata=request.args)
    if not form.validate() or form.kind.data not in EXPORT_KINDS:
        return render_template("dashboard/exports.html", form=form, kinds=EXPORT_KINDS,
                               period=form.chosen_period(business_today())), 422
    period = form.chosen_period(business_today())
    kind = form.kind.data
    return Response(stream_with_context(export_rows(kind, period)), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{export_filename(kind, period)}"',
                             "Cache-Control": "no-store"})


@bp.get("/audit")
@owner_only
def audit_log():
    filters = AuditFilterForm(formdata=request.args)
    filters.set_choices(people())
    filters.validate()
    page = request.args.get("page", 1, type=row_id_arg)
    results, job_numbers = audit_log_page(**filters.search_arguments(), page=page)
    if request.htmx.target == "audit-results":
        return render_template("dashboard/_audit_results.html", results=results, job_numbers=job_numbers)
    return render_template("dashboard/audit_log.html", filters=filters, results=results, job_numbers=job_numbers)
