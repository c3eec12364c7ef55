"""Office forms: parsing what staff type into the values the services take."""
from datetime import date, timezone
from decimal import Decimal

from flask_wtf import FlaskForm
from wtforms import (BooleanField, DateField, DateTimeLocalField, IntegerField, SelectField,
                     SelectMultipleField, StringField, TextAreaField)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional, ValidationError
from wtforms.widgets import CheckboxInput, ListWidget

from portal.billing.models import BillingStatus
from portal.clients.models import DEFAULT_REMINDER_LIMIT, DEFAULT_REMINDER_OFFSETS, Batching, BillingMode, SendMode
from portal.clients.services import CLIENT_CURRENCIES
from portal.dashboard.services import FIGURE_LABELS, business_today, figure_jobs_condition, period_for
from portal.jobs.models import WorkStatus
from portal.money import MoneyError, format_money, parse_major_amount
from portal.timeutil import business_zone, day_end_utc, day_start_utc



def options(pairs):
    """Select options from (value, label) pairs."""
    return [SelectChoice(value, label) for value, label in pairs]


CURRENCY_CHOICES = options((code, code.upper()) for code in CLIENT_CURRENCIES)
BILLING_MODE_CHOICES = options([(BillingMode.INVOICE.value, "Invoice"),
                                (BillingMode.PAYMENT_LINK.value, "Payment link")])
SEND_MODE_CHOICES = options([(SendMode.DRAFT.value, "Draft for review"), (SendMode.AUTO.value, "Send automatically")])
BATCHING_CHOICES = options([(Batching.PER_JOB.value, "Per job"), (Batching.WEEKLY.value, "Weekly batch"),
                            (Batching.MONTHLY.value, "Monthly batch"), (Batching.MANUAL.value, "Manual batch")])


class MoneyField(StringField):
    """A price typed in major units ("85.00"); `.data` is integer minor units (8500)."""

    def process_formdata(self, valuelist):
        self.data = None
        if valuelist and valuelist[0].strip():
            try:
                self.data = parse_major_amount(valuelist[0])
            except MoneyError as error:
                raise ValueError(str(error).capitalize() + ".") from None

    def _value(self):
        if self.raw_data:
            return self.raw_data[0]
        if self.data is None:
            return ""
        # Plain major units that parse back; every currency the office can pick has two decimals.
        return f"{Decimal(self.data).scaleb(-2):.2f}"


class BusinessDateTimeField(DateTimeLocalField):
    """A datetime-local input typed and shown in BUSINESS_TIMEZONE; `.data` is aware UTC."""

    def __init__(self, label=None, validators=None, **kwargs):
        super().__init__(label, validators, format=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"], tz=business_zone,
                         **kwargs)

    def process_formdata(self, valuelist):
        super().process_formdata(valuelist)
        if self.data is not None:
            self.data = self.data.astimezone(timezone.utc)


class FilterDateField(DateField):
    """A day a filter turns into business-time bounds; far-off years would overflow datetime (a 500, issue 8)."""

    earliest, latest = date(1900, 1, 1), date(2999, 12, 31)

    def pre_validate(self, form):
        if self.data is not None and not self.earliest <= self.data <= self.latest:
            self.data = None  # so no caller can use it, whether or not it checks the errors
            raise ValidationError(f"Pick a day between {self.earliest.year} and {self.latest.year}.")


class MultiCheckboxField(SelectMultipleField):
    """A list of checkboxes: easier to hit on a phone than a multi-select."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class OfficeForm(FlaskForm):
    def apply_service_errors(self, error):
        """Show a service refusal next to the fields it names; the rest go to `form_errors`."""
        shown_by_a_field = False
        for name, message in error.fields.items():
            field = getattr(self, name, None)
            if field is not None and hasattr(field, "errors"):
                field.errors = [*field.errors, message]
                shown_by_a_field = shown_by_a_field or message == error.message
        if not shown_by_a_field:
            self.form_errors.append(error.message)


class ClientForm(OfficeForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    billing_emails = TextAreaField("Billing emails", validators=[DataRequired()],
                                   description="One per line, or separated by commas.")
    phone = StringField("Phone", validators=[Optional(), Length(max=40)])
    address = TextAreaField("Billing address", validators=[Optional()])
    billing_mode = SelectField("Bill by", choices=BILLING_MODE_CHOICES)
    send_mode = SelectField("Sending", choices=SEND_MODE_CHOICES)
    days_until_due = IntegerField("Days until due", default=30, validators=[InputRequired(), NumberRange(0, 365)])
    batching = SelectField("Batching", choices=BATCHING_CHOICES)
    currency = SelectField("Currency", choices=CURRENCY_CHOICES)
    allow_no_charge = BooleanField("Jobs may be completed with no charge")
    tax_exempt = BooleanField("Tax exempt")
    # Reminders: the days are parsed and checked by reminders.services.set_reminder_policy.
    reminder_offsets = StringField("Remind on these days", default=", ".join(map(str, DEFAULT_REMINDER_OFFSETS)),
                                   validators=[Length(max=200)],
                                   description="Days from the due date, separated by commas: -3 is three days "
                                               "before, 0 the due date, 7 a week after.")
    reminder_limit = IntegerField("Most reminders per bill", default=DEFAULT_REMINDER_LIMIT,
                                  validators=[Optional(),
                                              NumberRange(1, 10, message="From 1 to 10; pause reminders to send none.")])
    reminders_paused = BooleanField("Pause automatic reminders for this client")

    @staticmethod
    def reminder_data_for(client):
        """Initial reminder policy values for editing `client`."""
        return {"reminder_offsets": ", ".join(str(offset) for offset in client.reminder_offsets or ()),
                "reminder_limit": client.reminder_limit, "reminders_paused": client.reminders_paused}

    def reminder_fields(self):
        """The fields set_reminder_policy takes; a field the request left out (an older form) is left unchanged."""
        return {"offsets": (self.reminder_offsets.data or "") if self.reminder_offsets.raw_data else None,
                "limit": self.reminder_limit.data, "paused": self.reminders_paused.data}

    @staticmethod
    def data_for(client):
        """Initial values for editing `client`; emails one per line."""
        return {"name": client.name, "billing_emails": "\n".join(client.billing_emails or []),
                "phone": client.phone, "address": client.address, "billing_mode": client.billing_mode.value,
                "send_mode": client.send_mode.value, "days_until_due": client.days_until_due,
                "batching": client.batching.value, "currency": client.currency,
                "allow_no_charge": client.allow_no_charge, "tax_exempt": client.tax_exempt,
                **ClientForm.reminder_data_for(client)}

    def client_fields(self):
        """The fields create_client/update_client take."""
        return {name: getattr(self, name).data for name in (
            "name", "billing_emails", "phone", "address", "billing_mode", "send_mode", "days_until_due",
            "batching", "currency", "allow_no_charge", "tax_exempt")}


class SiteForm(OfficeForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=200)],
                       description="How the office and crews call it: “Unit 4B”, “Main warehouse”.")
    address = TextAreaField("Address", validators=[DataRequired()])
    access_notes = TextAreaField("Access notes", validators=[Optional()],
                                 description="Gate codes, key boxes, parking: shown to the crew.")

    def site_fields(self):
        return {"name": self.name.data, "address": self.address.data, "access_notes": self.access_notes.data or ""}


class TemplateForm(OfficeForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=120)])
    description = TextAreaField("Description", validators=[Optional()])
    unit = StringField("Unit", default="each", validators=[Optional(), Length(max=20)],
                       description="hour, each, sq ft…")
    unit_amount = MoneyField("Unit price", validators=[InputRequired()], description="In dollars, like 85.00")
    currency = SelectField("Currency", choices=CURRENCY_CHOICES)
    taxable = BooleanField("Taxable")

    def template_fields(self):
        return {name: getattr(self, name).data for name in ("name", "description", "unit", "unit_amount",
                                                            "currency", "taxable")}


class JobForm(OfficeForm):
    client_id = SelectField("Client", coerce=int, validators=[DataRequired(message="Choose a client.")])
    # Choices follow the chosen client; whether a site belongs to it is the service's rule, with its message.
    site_id = SelectField("Site", coerce=int, validate_choice=False, validators=[Optional()])
    scope = TextAreaField("Scope of work", validators=[DataRequired()])
    customer_notes = TextAreaField("Customer notes", validators=[Optional()])
    external_ref = StringField("External reference", validators=[Optional(), Length(max=120)],
                               description="A ticket id in another system.")
    scheduled_start = BusinessDateTimeField("Starts", validators=[Optional()])
    scheduled_end = BusinessDateTimeField("Ends", validators=[Optional()])
    crew = MultiCheckboxField("Crew", coerce=int)

    @staticmethod
    def data_for(job):
        """Initial values for editing `job`."""
        return {"client_id": job.client_id, "site_id": job.site_id or 0, "scope": job.scope,
                "customer_notes": job.customer_notes, "external_ref": job.external_ref,
                "scheduled_start": job.scheduled_start, "scheduled_end": job.scheduled_end,
                "crew": [user.id for user in job.crew]}

    def set_choices(self, clients, sites, crew_members):
        """Fill the pickers; `sites` are the chosen client's."""
        # A placeholder first, so the site picker never shows sites of a client nobody chose.
        self.client_id.choices = options([(0, "Choose a client…"), *clients])
        self.site_id.choices = site_choices(sites)
        self.crew.choices = options((user.id, user.name) for user in crew_members)
        self._crew_members = {user.id: user for user in crew_members}

    def selected_crew(self):
        """The chosen crew as users (only ids offered as choices pass validation)."""
        return [self._crew_members[user_id] for user_id in self.crew.data or ()]

    def job_fields(self):
        """Everything but client, site and crew, which the view resolves to rows."""
        return {
            "scope": self.scope.data,
            "customer_notes": self.customer_notes.data or "",
            "external_ref": self.external_ref.data,
            "scheduled_start": self.scheduled_start.data,
            "scheduled_end": self.scheduled_end.data,
        }


def site_choices(sites):
    """The site picker's options: no site means the job is at the client's billing address."""
    return options([(0, "No site: the client's billing address")]
                   + [(site.id, f"{site.name} · {site.address}") for site in sites])


class JobFilterForm(FlaskForm):
    """The job list's filters: plain GET parameters, so a filtered list is a shareable URL."""

    class Meta:
        csrf = False  # a GET that changes nothing

    q = StringField("Search", validators=[Optional(), Length(max=200)],
                    description="Number, scope, reference or client")
    work_status = SelectField("Work", validators=[Optional()],
                              choices=options([("", "Any work status")] + [(s.value, s.label) for s in WorkStatus]))
    billing_status = SelectField("Billing", validators=[Optional()],
                                 choices=options([("", "Any billing status")]
                                                 + [(s.value, s.label) for s in BillingStatus]))
    client = SelectField("Client", coerce=int, validators=[Optional()])
    crew = SelectField("Crew member", coerce=int, validators=[Optional()])
    scheduled_from = FilterDateField("From", validators=[Optional()])
    scheduled_to = FilterDateField("To", validators=[Optional()])
    # The jobs behind a dashboard figure (portal/dashboard/services.py): its key and its period.
    figure = SelectField("Figure", validators=[Optional()], choices=options([("", "")] + list(FIGURE_LABELS.items())))
    period_from = FilterDateField("Period from", validators=[Optional()])
    period_to = FilterDateField("Period to", validators=[Optional()])

    def set_choices(self, clients, crew_members):
        self.client.choices = options([(0, "Any client"), *clients])
        self.crew.choices = options([(0, "Anyone")] + [(user.id, user.name) for user in crew_members])

    def search_arguments(self):
        """Keyword arguments for search_jobs; a filter whose value did not validate is left out."""
        def valid(field):
            return field.data not in (None, "", 0) and not field.errors

        return {
            "text": self.q.data or None,  # searched for even when too long: then it finds nothing, not everything
            "work_status": WorkStatus(self.work_status.data) if valid(self.work_status) else None,
            "billing_status": BillingStatus(self.billing_status.data) if valid(self.billing_status) else None,
            "client_id": self.client.data if valid(self.client) else None,
            "crew_id": self.crew.data if valid(self.crew) else None,
            "scheduled_from": day_start_utc(self.scheduled_from.data) if valid(self.scheduled_from) else None,
            "scheduled_before": day_end_utc(self.scheduled_to.data) if valid(self.scheduled_to) else None,
            "condition": self.figure_condition() if valid(self.figure) else None,
        }


    def figure_condition(self):
        """The same condition the dashboard counted this figure with, over the same period."""
        today = business_today()
        first_day = self.period_from.data if not self.period_from.errors and self.period_from.data else today
        last_day = self.period_to.data if not self.period_to.errors and self.period_to.data else first_day
        return figure_jobs_condition(self.figure.data, period_for("range", today=today, first_day=first_day,
                                                                  last_day=last_day), today)


class NoteForm(OfficeForm):
    body = TextAreaField("Note", validators=[DataRequired(), Length(max=5000)])


class AddLineItemForm(OfficeForm):
    template_id = SelectField("From the price list", coerce=int, validators=[Optional()])
    description = StringField("Or describe it", validators=[Optional(), Length(max=500)])
    quantity = StringField("Quantity", default="1", validators=[DataRequired()])
    unit_amount = MoneyField("Unit price", validators=[Optional()],
                             description="Leave empty to use the price list's.")
    unit = StringField("Unit", validators=[Optional(), Length(max=20)])
    taxable = BooleanField("Taxable")

    def set_choices(self, templates):
        self.template_id.choices = options([(0, "Custom item")] + [
            (template.id, f"{template.name} · {format_money(template.unit_amount, template.currency)}/{template.unit}")
            for template in templates])
        self._templates = {template.id: template for template in templates}

    def selected_template(self):
        return self._templates.get(self.template_id.data or 0)

    def line_fields(self):
        """Keyword arguments for add_line_item, leaving out what the template should supply."""
        template = self.selected_template()
        fields = {"template": template, "quantity": self.quantity.data,
                  "description": self.description.data or None, "unit": self.unit.data or None,
                  "unit_amount": self.unit_amount.data}
        # An unchecked box cannot say "use the template's"; for template lines the template decides.
        fields["taxable"] = None if template is not None else self.taxable.data
        return fields


class EditLineItemForm(OfficeForm):
    description = StringField("Description", validators=[DataRequired(), Length(max=500)])
    quantity = StringField("Quantity", validators=[DataRequired()])
    unit_amount = MoneyField("Unit price", validators=[InputRequired()])

    def line_fields(self):
        return {"description": self.description.data, "quantity": self.quantity.data,
                "unit_amount": self.unit_amount.data}


class CompleteJobForm(OfficeForm):
    no_charge_reason = StringField("No-charge reason", validators=[Optional(), Length(max=500)],
                                   description="Only for a job with no line items.")


class ReopenJobForm(OfficeForm):
    reason = TextAreaField("Why reopen it?", validators=[DataRequired(message="Say why the job is reopened."),
                                                         Length(max=2000)])


# --- Billing: the office's overrides on a job's bill, and "Bill now" --------------------------------

PAID_OFFLINE_METHODS = options([("cash", "Cash"), ("check", "Check"), ("other", "Other")])


class VoidBillForm(OfficeForm):
    reason = TextAreaField("Why void it?", validators=[DataRequired(message="Say why the bill is voided."),
                                                       Length(max=2000)])


class PaidOfflineForm(OfficeForm):
    method = SelectField("Paid by", choices=PAID_OFFLINE_METHODS)
    note = StringField("Note", validators=[Optional(), Length(max=500)],
                       description="Check number, receipt, who took it… (optional)")


class NoChargeForm(OfficeForm):
    reason = TextAreaField("Why no charge?", validators=[DataRequired(message="Say why there is no charge."),
                                                         Length(max=2000)])


class PauseRemindersForm(OfficeForm):
    paused = SelectField("Reminders", choices=options([("yes", "Pause"), ("no", "Resume")]))


class BillNowForm(OfficeForm):
    # Whether each job is still ready to bill is the service's question, asked under a row lock.
    job_ids = SelectMultipleField("Jobs", coerce=int, validate_choice=False,
                                  validators=[DataRequired(message="Choose at least one job to bill.")])
