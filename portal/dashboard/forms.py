"""The dashboard's, the exports' and the audit log's filters: plain GET parameters, so a view is a URL."""
from flask_wtf import FlaskForm
from wtforms import SelectField, StringField
from wtforms.validators import Length, Optional

from portal.audit.models import Source
from portal.dashboard.services import PERIODS, Scope, period_for
from portal.office.forms import FilterDateField, options
from portal.timeutil import day_end_utc, day_start_utc


class GetForm(FlaskForm):
    class Meta:
        csrf = False  # GETs that change nothing


def valid(field):
    return field.data not in (None, "", 0) and not field.errors


class DashboardFilterForm(GetForm):
    period = SelectField("Period", choices=options(PERIODS.items()), default="month", validators=[Optional()])
    start = FilterDateField("From", validators=[Optional()])
    end = FilterDateField("To", validators=[Optional()])
    client = SelectField("Client", coerce=int, validators=[Optional()])
    crew = SelectField("Crew member", coerce=int, validators=[Optional()])

    def set_choices(self, clients, crew_members):
        self.client.choices = options([(0, "All clients"), *clients])
        self.crew.choices = options([(0, "Everyone")] + [(user.id, user.name) for user in crew_members])

    def chosen_period(self, today):
        """The period asked for; typing dates means a range; anything invalid falls back to this month."""
        key = self.period.data if valid(self.period) else None
        if key in (None, "range") and valid(self.start) and valid(self.end):
            key = "range"  # typed dates without a period, as a shared link might carry them
        return period_for(key, today=today, first_day=self.start.data if valid(self.start) else None,
                          last_day=self.end.data if valid(self.end) else None)

    def chosen_scope(self):
        return Scope(client_id=self.client.data if valid(self.client) else None,
                     crew_id=self.crew.data if valid(self.crew) else None)


EXPORT_KINDS = {
    "invoices": "Invoices (sent in the range)",
    "payments": "Payments (received in the range)",
    "refunds": "Refunds (first refunded in the range)",
    "payouts": "Referral payouts (customer paid in the range)",
    "audit": "Audit log (entries in the range)",
}


class ExportForm(GetForm):
    kind = SelectField("Export", choices=options(EXPORT_KINDS.items()), validators=[Optional()])
    start = FilterDateField("From", validators=[Optional()])
    end = FilterDateField("To", validators=[Optional()])

    def chosen_period(self, today):
        return period_for("range" if valid(self.start) and valid(self.end) else "month", today=today,
                          first_day=self.start.data if valid(self.start) else None,
                          last_day=self.end.data if valid(self.end) else None)


class AuditFilterForm(GetForm):
    job = StringField("Job number", validators=[Optional(), Length(max=20)], description="For example J-00042")
    user = SelectField("Person", coerce=int, validators=[Optional()])
    source = SelectField("Source", validators=[Optional()], choices=options(
        [("", "Any source")] + [(source.value, source.value.replace("_", " ").capitalize()) for source in Source]))
    start = FilterDateField("From", validators=[Optional()])
    end = FilterDateField("To", validators=[Optional()])

    def set_choices(self, users):
        self.user.choices = options([(0, "Anyone")] + [(user.id, f"{user.name} ({user.role.value})") for user in users])

    def search_arguments(self):
        """Keyword arguments for audit_log_page; a field that did not validate is left out."""
        return {
            # searched for even when too long: then it finds nothing, rather than every entry
            "job_number": (self.job.data or "").strip() or None,
            "user_id": self.user.data if valid(self.user) else None,
            "source": Source(self.source.data) if valid(self.source) else None,
            "since": day_start_utc(self.start.data) if valid(self.start) else None,
            "before": day_end_utc(self.end.data) if valid(self.end) else None,
        }
