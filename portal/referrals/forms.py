"""Forms for partner setup, attribution and the payouts ledger: what staff type, as the services' values."""
from decimal import Decimal, InvalidOperation

from flask_wtf import FlaskForm
from wtforms import BooleanField, DateField, EmailField, IntegerField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from portal.extensions import db
from portal.office.forms import CURRENCY_CHOICES, ClientForm, FilterDateField, MoneyField, OfficeForm, options
from portal.referrals.models import DisputePolicy, FeeBase, FeeKind, Partner, PayoutStatus
from portal.referrals.services import FEE_RULE_FIELDS, business_today, open_client_referral, partner_choices

FEE_KIND_CHOICES = [(FeeKind.PERCENT.value, "A percentage of what was paid"),
                    (FeeKind.FLAT.value, "A flat fee per paid job")]
FEE_BASE_CHOICES = [(FeeBase.SUBTOTAL.value, "of the pre-tax subtotal"),
                    (FeeBase.TOTAL.value, "of the total, tax included")]
DISPUTE_CHOICES = options([(DisputePolicy.HOLD.value, "Hold: keep an unpaid fee waiting until it is settled"),
                           (DisputePolicy.REVERSE.value, "Reverse: take the fee back as soon as a dispute opens")])
STATUS_LABELS = {
    PayoutStatus.PENDING: "Pending",
    PayoutStatus.HELD: "Held",
    PayoutStatus.HELD_NO_ACCOUNT: "Held: no account",
    PayoutStatus.PAID: "Paid",
    PayoutStatus.FAILED: "Failed",
    PayoutStatus.REVERSED: "Reversed",
    PayoutStatus.CANCELLED: "Cancelled",
}


class PercentField(StringField):
    """A percentage typed as "12.5"; `.data` is basis points (1250). The range is the service's rule."""

    def process_formdata(self, valuelist):
        self.data = None
        text = valuelist[0].strip().rstrip("%").strip() if valuelist else ""
        if not text:
            return
        try:
            basis_points = Decimal(text) * 100
        except InvalidOperation:
            raise ValueError("Enter a percentage like 10 or 12.5.") from None
        if not basis_points.is_finite() or basis_points != basis_points.to_integral_value():
            raise ValueError("Use at most two decimals, like 12.25.")
        self.data = int(basis_points)

    def _value(self):
        if self.raw_data:
            return self.raw_data[0]
        if self.data is None:
            return ""
        text = f"{Decimal(self.data).scaleb(-2):.2f}"
        return text.rstrip("0").rstrip(".")


class FeeRuleFields:
    """The fee rule's inputs; an override's pickers offer "the partner's" as an empty choice."""

    fee_kind = SelectField("Fee", choices=options(FEE_KIND_CHOICES))
    fee_basis_points = PercentField("Percent", validators=[Optional()], description="Like 10 or 12.5")
    fee_base = SelectField("Percent of", choices=options(FEE_BASE_CHOICES))
    fee_flat = MoneyField("Flat fee", validators=[Optional()], description="In dollars, like 50.00")
    fee_minimum = MoneyField("Minimum", validators=[Optional()], description="Optional")
    fee_cap = MoneyField("Cap", validators=[Optional()], description="Optional")

    def fee_rule(self):
        """The FeeRule columns as typed; empty pickers are None (the partner's)."""
        return {name: (getattr(self, name).data or None) if name in ("fee_kind", "fee_base")
                else getattr(self, name).data for name in FEE_RULE_FIELDS}


class PartnerForm(FeeRuleFields, OfficeForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=200)],
                       description="The business or person who sends work.")
    contact_name = StringField("Contact person", validators=[Optional(), Length(max=120)])
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)],
                       description="Also their login to the partner portal.")
    phone = StringField("Phone", validators=[Optional(), Length(max=40)])
    password = PasswordField("Password", validators=[Optional()],
                             description="At least 10 characters. Tell it to the partner; they can sign in at once.")
    currency = SelectField("Currency", choices=CURRENCY_CHOICES)
    hold_days = IntegerField("Hold fees for (days)", default=0, validators=[InputRequired(), NumberRange(0, 365)],
                             description="0 pays as soon as the customer pays; more rides out refunds and disputes.")
    dispute_policy = SelectField("When a customer disputes", choices=DISPUTE_CHOICES)
    active = BooleanField("Active (can sign in, can be credited with new referrals)", default=True)

    @staticmethod
    def data_for(partner):
        """Initial values for editing `partner`."""
        data = {name: getattr(partner, name) for name in ("name", "contact_name", "phone", "currency", "hold_days",
                                                         "active", *FEE_RULE_FIELDS)}
        data.update(email=partner.user.email if partner.user else partner.email,
                    dispute_policy=partner.dispute_policy.value,
                    fee_kind=partner.fee_kind.value if partner.fee_kind else FeeKind.PERCENT.value,
                    fee_base=partner.fee_base.value if partner.fee_base else FeeBase.SUBTOTAL.value)
        return data

    def partner_fields(self):
        """What create_partner / update_partner take."""
        fields = {name: getattr(self, name).data for name in ("name", "contact_name", "email", "phone", "currency",
                                                              "hold_days", "dispute_policy", "active")}
        return {**fields, **self.fee_rule(), "password": self.password.data or None}


class ReferralTermsFields(FeeRuleFields):
    """From when, until when, and an optional fee override; every override input may stay empty."""

    starts_on = DateField("From", validators=[InputRequired(message="Say from which day it counts.")],
                          default=business_today)
    ends_on = DateField("Until (optional)", validators=[Optional()], description="The last day it counts.")
    fee_kind = SelectField("Fee", choices=options([("", "The partner's fee"), *FEE_KIND_CHOICES]),
                           validators=[Optional()])
    fee_base = SelectField("Percent of", choices=options([("", "The partner's base"), *FEE_BASE_CHOICES]),
                           validators=[Optional()])

    def referral_fields(self):
        """What add_referral takes besides the partner and the client or job."""
        return {"starts_on": self.starts_on.data, "ends_on": self.ends_on.data, **self.fee_rule()}


class ClientReferralForm(ReferralTermsFields, OfficeForm):
    """The partner page's "Add a referred client"."""

    client_id = SelectField("Client", coerce=int, validators=[DataRequired(message="Choose a client.")])
    max_paid_jobs = IntegerField("Only the first N paid jobs (optional)", validators=[Optional()])

    def set_choices(self, clients):
        self.client_id.choices = options([(0, "Choose a client…"), *clients])

    def referral_fields(self):
        return {**super().referral_fields(), "max_paid_jobs": self.max_paid_jobs.data}


class JobReferralForm(ReferralTermsFields, OfficeForm):
    """The job page's "Referred by" for this job alone."""

    partner_id = SelectField("Referred by", coerce=int, validators=[DataRequired(message="Choose a partner.")])

    def set_choices(self, partners):
        self.partner_id.choices = options([(0, "Choose a partner…"), *partners])


class ClientWithReferralForm(ClientForm):
    """The client form plus "Referred by": who referred the client, from when, until when or for how many jobs."""

    referral_partner_id = SelectField("Referred by", coerce=int, default=0, validators=[Optional()])
    referral_starts_on = DateField("Referred from", validators=[Optional()], default=business_today,
                                   description="Jobs billed from this day earn the partner a fee.")
    referral_ends_on = DateField("Referral ends (optional)", validators=[Optional()])
    referral_max_paid_jobs = IntegerField("Only the first N paid jobs (optional)", validators=[Optional()])

    @staticmethod
    def data_for(client, referral=None):
        """Initial values: the client's, and its open referral's."""
        data = ClientForm.data_for(client)
        if referral is not None:
            data.update(referral_partner_id=referral.partner_id, referral_starts_on=referral.starts_on,
                        referral_ends_on=referral.ends_on, referral_max_paid_jobs=referral.max_paid_jobs)
        else:
            data.update(referral_partner_id=0, referral_starts_on=None)
        return data

    def set_referral_choices(self, partners):
        self.referral_partner_id.choices = options([(0, "Nobody"), *partners])

    def referrer(self):
        """The chosen partner row, or None for "Nobody" (only offered ids pass validation)."""
        return db.session.get(Partner, self.referral_partner_id.data) if self.referral_partner_id.data else None

    def referral_fields(self):
        """What set_client_referral takes besides the client and the partner."""
        return {"partner": self.referrer(), "starts_on": self.referral_starts_on.data,
                "ends_on": self.referral_ends_on.data, "max_paid_jobs": self.referral_max_paid_jobs.data}


class LedgerFilterForm(FlaskForm):
    """The ledger's filters: plain GET parameters, so a filtered ledger is a shareable URL."""

    class Meta:
        csrf = False  # a GET that changes nothing

    partner = SelectField("Partner", coerce=int, validators=[Optional()])
    status = SelectField("Status", validators=[Optional()],
                         choices=options([("", "Any status")]
                                         + [(status.value, label) for status, label in STATUS_LABELS.items()]))
    paid_from = FilterDateField("Paid from", validators=[Optional()])
    paid_to = FilterDateField("Paid to", validators=[Optional()])

    def set_choices(self, partners):
        self.partner.choices = options([(0, "Every partner"), *partners])

    def filter_arguments(self):
        """Keyword arguments for LedgerFilters; a value that did not validate is left out."""
        def valid(field):
            return field.data not in (None, "", 0) and not field.errors

        return {"partner_id": self.partner.data if valid(self.partner) else None,
                "status": PayoutStatus(self.status.data) if valid(self.status) else None,
                "paid_from": self.paid_from.data if valid(self.paid_from) else None,
                "paid_to": self.paid_to.data if valid(self.paid_to) else None}


def client_form_with_referral(client=None):
    """The office's client form with "Referred by" filled from the client's open referral and partner choices."""
    referral = open_client_referral(client) if client is not None else None
    form = (ClientWithReferralForm(data=ClientWithReferralForm.data_for(client, referral)) if client is not None
            else ClientWithReferralForm())
    form.set_referral_choices(partner_choices(include=referral.partner_id if referral else None))
    return form
