"""Line-item templates: the price list crews pick from. Retired, never deleted: job lines point at them."""
from flask import abort
from sqlalchemy import select

from portal.audit.services import record, record_changes
from portal.clients.services import CLIENT_CURRENCIES
from portal.errors import TransitionNotAllowed, Unprocessable
from portal.extensions import db, is_row_id
from portal.jobs.models import LineItemTemplate
from portal.money import MoneyError, parse_amount

TEMPLATE_FIELDS = ("name", "description", "unit", "unit_amount", "currency", "taxable")


def get_template_for(user, template_id):
    """The template, if this user may manage templates (staff); 404 otherwise."""
    template = db.session.get(LineItemTemplate, template_id) if user.is_staff and is_row_id(template_id) else None
    if template is None:
        abort(404)
    return template


def all_templates():
    """Every template, active ones first, each group by name."""
    return db.session.scalars(
        select(LineItemTemplate).order_by(LineItemTemplate.active.desc(), LineItemTemplate.name, LineItemTemplate.id)
    ).all()


def clean_template_fields(fields):
    """Validate and normalise template fields; `unit_amount` is in minor units (cents)."""
    unknown = set(fields) - set(TEMPLATE_FIELDS)
    if unknown:
        raise TypeError(f"not template fields: {', '.join(sorted(unknown))}")
    clean, errors = {}, {}
    for field, value in fields.items():
        if field == "name":
            clean[field] = (value or "").strip()[:120]
            if not clean[field]:
                errors[field] = "The item needs a name."
        elif field == "description":
            clean[field] = (value or "").strip()
        elif field == "unit":
            clean[field] = (value or "").strip()[:20] or "each"
        elif field == "unit_amount":
            try:
                clean[field] = parse_amount(value)
            except MoneyError as error:
                errors[field] = f"The price is not usable: {error}."
        elif field == "currency":
            clean[field] = (value or "").strip().lower()
            if clean[field] not in CLIENT_CURRENCIES:
                errors[field] = f"Currency must be one of {', '.join(c.upper() for c in CLIENT_CURRENCIES)}."
        else:
            clean[field] = bool(value)
    if errors:
        raise Unprocessable(" ".join(errors.values()), errors)
    return clean


def create_template(*, by, **fields):
    """A new active template."""
    if "unit_amount" not in fields:
        raise Unprocessable("The item needs a price.", {"unit_amount": "required"})
    template = LineItemTemplate(**clean_template_fields({"name": "", **fields}))
    db.session.add(template)
    db.session.flush()
    record(by, "line_item_template.created", template,
           detail={"name": template.name, "unit_amount": template.unit_amount, "currency": template.currency})
    return template


def update_template(template, *, by, **fields):
    """Change a template; lines already on jobs keep the values they were added with."""
    clean = clean_template_fields(fields)
    changes = {field: (getattr(template, field), value) for field, value in clean.items()}
    for field, (old, new) in changes.items():
        if old != new:
            setattr(template, field, new)
    record_changes(by, template, changes, action="line_item_template.updated")
    return template


def retire_template(template, *, by):
    """Hide a template from the pickers; job lines made from it stay as they are."""
    if not template.active:
        raise TransitionNotAllowed("That item is already retired.")
    template.active = False
    record(by, "line_item_template.retired", template, field="active", old=True, new=False)
    return template


def restore_template(template, *, by):
    """Put a retired template back in the pickers."""
    if template.active:
        raise TransitionNotAllowed("That item is already active.")
    template.active = True
    record(by, "line_item_template.restored", template, field="active", old=False, new=True)
    return template
