"""Reading API input: JSON bodies and query strings become typed values, or a 400 naming the fields.

Only the shape is checked here (present, right JSON type, known field). Whether a value can be
used (a negative quantity, an unknown client) is for the services, which answer 422.
"""
import json
import re
from datetime import datetime, timezone
from decimal import Decimal

from flask import request

from portal.billing.models import BillingStatus
from portal.errors import ServiceError
from portal.extensions import MAX_ROW_ID
from portal.jobs.models import WorkStatus

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_LINE_ITEMS = 100
CENTS_HINT = "must be a whole number of cents, as a JSON integer (8550 for 85.50)"

CLIENT_FIELDS = {"name", "billing_emails", "phone", "address", "billing_mode", "send_mode", "days_until_due",
                 "batching", "currency", "allow_no_charge", "tax_exempt", "sites"}
SITE_FIELDS = {"name", "address", "access_notes"}
JOB_FIELDS = {"client_id", "site_id", "scope", "customer_notes", "external_ref", "scheduled_start", "scheduled_end",
              "crew_ids", "crew_emails", "line_items"}
LINE_ITEM_FIELDS = {"template_id", "description", "quantity", "unit_amount", "unit", "taxable"}
COMPLETION_FIELDS = {"line_items", "no_charge_reason"}
PAGE_PARAMS = {"limit", "starting_after", "cursor"}
JOB_FILTER_PARAMS = PAGE_PARAMS | {"work_status", "status", "billing_status", "updated_since", "client_id", "external_ref"}


class MalformedRequest(ServiceError):
    """The request itself is wrong: not JSON, a field missing, of the wrong type, or unknown."""

    status = 400


def _refuse_constant(name):
    raise ValueError(f"{name} is not a number")


def json_body(*, required=True):
    """The body as a JSON object; fractional numbers become Decimal so that no amount is ever a float."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        if required:
            raise MalformedRequest("Send a JSON object in the request body.", {"body": "required"})
        return {}
    try:
        data = json.loads(raw, parse_float=Decimal, parse_constant=_refuse_constant)
    except ValueError:  # also covers bytes that are not UTF-8
        raise MalformedRequest("The request body is not valid JSON.", {"body": "not valid JSON"}) from None
    if not isinstance(data, dict):
        raise MalformedRequest("The request body must be a JSON object.", {"body": "must be a JSON object"})
    return data


def parse_timestamp(text):
    """An ISO 8601 timestamp with a UTC offset, as aware UTC; ValueError otherwise."""
    # A `+` in a query string arrives as a space; put the offset's sign back.
    text = re.sub(r" (\d{2}(:?\d{2})?)$", r"+\1", text.strip())
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError("naive timestamp")
    return value.astimezone(timezone.utc)


def _is_kind(value, kind):
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ROW_ID
    return isinstance(value, kind)


class FieldReader:
    """Reads one JSON object field by field, collecting every mistake before refusing the request."""

    def __init__(self, data, allowed, prefix=""):
        self.data = data
        self.prefix = prefix
        self.errors = {}
        for key in data:
            if key not in allowed:
                self.fail(key, "unknown field")

    def fail(self, key, message):
        self.errors[f"{self.prefix}{key}"] = message

    def _value(self, key, required):
        value = self.data.get(key)
        if value is None and required:
            self.fail(key, "required")
        return value

    def text(self, key, *, required=False, max_length=None, default=""):
        value = self._value(key, required)
        if value is None:
            return None if required else default
        if not isinstance(value, str):
            self.fail(key, "must be a string")
            return default
        value = value.strip()
        if required and not value:
            self.fail(key, "must not be blank")
        if max_length is not None and len(value) > max_length:
            self.fail(key, f"at most {max_length} characters")
        return value

    def identifier(self, key, *, required=False):
        value = self._value(key, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_ROW_ID:
            self.fail(key, "must be a positive integer id")
            return None
        return value

    def integer(self, key):
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, "must be an integer")
            return None
        return value

    def boolean(self, key):
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            self.fail(key, "must be true or false")
            return None
        return value

    def choice(self, key):
        """A string naming an enum member; whether it names one is for the service to say."""
        value = self.data.get(key)
        if value is not None and not isinstance(value, str):
            self.fail(key, "must be a string")
            return None
        return value

    def list_of(self, key, kind, noun, max_items=None, required=False):
        value = self._value(key, required)
        if value is None:
            return []
        if not isinstance(value, list) or not all(_is_kind(entry, kind) for entry in value):
            self.fail(key, f"must be a list of {noun}")
            return []
        if max_items is not None and len(value) > max_items:
            self.fail(key, f"at most {max_items} entries")
            return []
        return value

    def timestamp(self, key):
        value = self.data.get(key)
        if value is None:
            return None
        try:
            if not isinstance(value, str):
                raise ValueError("not a string")
            return parse_timestamp(value)
        except ValueError:
            self.fail(key, "must be an ISO 8601 timestamp with a UTC offset, like 2025-03-01T09:00:00-05:00")
            return None

    def quantity(self, key):
        """A number or numeric string, passed on as text so that 1.333 stays exactly 1.333."""
        value = self.data.get(key, "1")
        if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
            self.fail(key, "must be a number or a numeric string")
            return None
        return str(value)

    def cents(self, key, *, required=False):
        """Money is a JSON integer of minor units; a float such as 85.5 is refused, never rounded."""
        value = self._value(key, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, CENTS_HINT)
            return None
        return value

    def nested(self, other):
        self.errors.update(other.errors)

    def finish(self):
        """Refuse the request with every field at fault, or return nothing."""
        if self.errors:
            raise MalformedRequest("Check the fields listed.", self.errors)


def client_payload(data):
    """The fields of a new client, with its optional sites."""
    reader = FieldReader(data, CLIENT_FIELDS)
    fields = {
        "name": reader.text("name", required=True, max_length=200),
        "billing_emails": reader.list_of("billing_emails", str, "email addresses", required=True),
        "phone": reader.text("phone", max_length=40),
        "address": reader.text("address", max_length=2000),
        "billing_mode": reader.choice("billing_mode"),
        "send_mode": reader.choice("send_mode"),
        "days_until_due": reader.integer("days_until_due"),
        "batching": reader.choice("batching"),
        "currency": reader.choice("currency"),
        "allow_no_charge": reader.boolean("allow_no_charge"),
        "tax_exempt": reader.boolean("tax_exempt"),
        "sites": [],
    }
    for index, site in enumerate(reader.list_of("sites", dict, "objects", max_items=100)):
        site_reader = FieldReader(site, SITE_FIELDS, prefix=f"sites[{index}].")
        fields["sites"].append({
            "name": site_reader.text("name", required=True, max_length=200),
            "address": site_reader.text("address", required=True, max_length=2000),
            "access_notes": site_reader.text("access_notes", max_length=2000),
        })
        reader.nested(site_reader)
    reader.finish()
    return {key: value for key, value in fields.items() if value is not None}


def line_items_payload(reader):
    """`line_items`: each either {description, quantity, unit_amount} or {template_id, quantity}."""
    lines = []
    for index, line in enumerate(reader.list_of("line_items", dict, "objects", max_items=MAX_LINE_ITEMS)):
        line_reader = FieldReader(line, LINE_ITEM_FIELDS, prefix=f"line_items[{index}].")
        # A template supplies the description, price, unit and taxability; a custom line must say them.
        custom = "template_id" not in line
        lines.append({
            "template_id": line_reader.identifier("template_id", required=not custom),
            "description": line_reader.text("description", required=custom, max_length=500, default=None),
            "quantity": line_reader.quantity("quantity"),
            "unit_amount": line_reader.cents("unit_amount", required=custom),
            "unit": line_reader.text("unit", max_length=20, default=None),
            "taxable": line_reader.boolean("taxable"),
        })
        reader.nested(line_reader)
    return lines


def job_payload(data):
    """The fields of a new job, with its optional crew and line items."""
    reader = FieldReader(data, JOB_FIELDS)
    fields = {
        "client_id": reader.identifier("client_id", required=True),
        "site_id": reader.identifier("site_id"),
        "scope": reader.text("scope", max_length=10000),
        "customer_notes": reader.text("customer_notes", max_length=10000),
        "external_ref": reader.text("external_ref", max_length=120, default=None) or None,
        "scheduled_start": reader.timestamp("scheduled_start"),
        "scheduled_end": reader.timestamp("scheduled_end"),
        "crew_ids": reader.list_of("crew_ids", int, "user ids", max_items=20),
        "crew_emails": reader.list_of("crew_emails", str, "email addresses", max_items=20),
    }
    fields["line_items"] = line_items_payload(reader)
    reader.finish()
    return fields


def completion_payload(data):
    """Optional line items to add and an optional reason when nothing is charged."""
    reader = FieldReader(data, COMPLETION_FIELDS)
    no_charge_reason = reader.text("no_charge_reason", max_length=2000, default=None) or None
    line_items = line_items_payload(reader)
    reader.finish()
    return {"line_items": line_items, "no_charge_reason": no_charge_reason}


def _unknown_params(args, allowed):
    return {key: "unknown parameter" for key in args if key not in allowed}


def _param_id(args, key, errors):
    text = args.get(key)
    if text is None or text == "":
        return None
    if not text.isdigit() or not 0 < int(text) <= MAX_ROW_ID:
        errors[key] = "must be a positive integer id"
        return None
    return int(text)


def _page(args, errors):
    limit = DEFAULT_PAGE_SIZE
    if args.get("limit"):
        text = args["limit"]
        if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE_SIZE:
            errors["limit"] = f"must be a whole number from 1 to {MAX_PAGE_SIZE}"
        else:
            limit = int(text)
    after = _param_id(args, "starting_after", errors) or _param_id(args, "cursor", errors) or 0
    return limit, after


def page_args(args):
    """`limit` (1–200, default 50) and `starting_after` (or its alias `cursor`): the last id already seen."""
    errors = _unknown_params(args, PAGE_PARAMS)
    limit, after = _page(args, errors)
    if errors:
        raise MalformedRequest("Check the query parameters listed.", errors)
    return limit, after


def _status_param(args, key, enum, errors):
    text = args.get(key)
    if not text:
        return None
    try:
        return enum(text)
    except ValueError:
        errors[key] = "must be one of " + ", ".join(member.value for member in enum)
        return None


def job_filters(args):
    """Filters for the job list, plus its page; any unknown or unusable parameter is a 400."""
    errors = _unknown_params(args, JOB_FILTER_PARAMS)
    work_status = _status_param(args, "work_status", WorkStatus, errors)
    alias = _status_param(args, "status", WorkStatus, errors)
    if work_status and alias and work_status != alias:
        errors["status"] = "contradicts work_status (status is its alias)"
    updated_since = None
    if args.get("updated_since"):
        try:
            updated_since = parse_timestamp(args["updated_since"])
        except ValueError:
            errors["updated_since"] = "must be an ISO 8601 timestamp with a UTC offset, like 2025-03-01T00:00:00Z"
    filters = {
        "work_status": work_status or alias,
        "billing_status": _status_param(args, "billing_status", BillingStatus, errors),
        "updated_since": updated_since,
        "client_id": _param_id(args, "client_id", errors),
        "external_ref": args.get("external_ref") or None,
    }
    limit, after = _page(args, errors)
    if errors:
        raise MalformedRequest("Check the query parameters listed.", errors)
    return filters, limit, after
