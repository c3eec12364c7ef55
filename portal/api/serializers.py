"""The JSON the API answers with: amounts as integer minor units beside their currency, times in UTC."""
from datetime import timezone


def timestamp(value):
    """ISO 8601 in UTC with a `Z`, or None."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _enum(value):
    return None if value is None else value.value


def person(user):
    return None if user is None else {"id": user.id, "name": user.name}


def site_json(site):
    return {"id": site.id, "name": site.name, "address": site.address, "access_notes": site.access_notes}


def client_json(client):
    """A client with its billing policy and sites."""
    return {
        "id": client.id,
        "name": client.name,
        "billing_emails": list(client.billing_emails or []),
        "phone": client.phone,
        "address": client.address,
        "billing_mode": _enum(client.billing_mode),
        "send_mode": _enum(client.send_mode),
        "days_until_due": client.days_until_due,
        "batching": _enum(client.batching),
        "currency": client.currency,
        "allow_no_charge": client.allow_no_charge,
        "tax_exempt": client.tax_exempt,
        "sites": [site_json(site) for site in client.sites],
        "created_at": timestamp(client.created_at),
        "updated_at": timestamp(client.updated_at),
    }


def line_item_json(item):
    return {
        "id": item.id,
        "description": item.description,
        "quantity": f"{item.quantity:.3f}",  # a string: JSON numbers would turn 1.333 into a float
        "unit": item.unit,
        "unit_amount": item.unit_amount,
        "amount": item.amount,
        "taxable": item.taxable,
        "tax_amount": item.tax_amount,
    }


def billing_json(record):
    """The job's live invoice or payment link, or None before one exists."""
    if record is None:
        return None
    return {
        "kind": _enum(record.kind),
        "status": _enum(record.status),
        "stripe_invoice_id": record.stripe_invoice_id,
        "stripe_payment_link_id": record.stripe_payment_link_id,
        "hosted_url": record.hosted_url,
        "invoice_number": record.invoice_number,
        "due_at": timestamp(record.due_at),
        "total": record.total,
        "amount_paid": record.amount_paid,
        "amount_refunded": record.amount_refunded,
    }


def job_json(job):
    """A job: both statuses, its lines and totals, and its live bill."""
    totals = job.totals
    return {
        "id": job.id,
        "number": job.number,
        "client": {"id": job.client.id, "name": job.client.name},
        "site": None if job.site is None else {"id": job.site.id, "name": job.site.name, "address": job.site.address},
        "scope": job.scope,
        "customer_notes": job.customer_notes,
        "external_ref": job.external_ref,
        "scheduled_start": timestamp(job.scheduled_start),
        "scheduled_end": timestamp(job.scheduled_end),
        "crew": [person(user) for user in job.crew],
        "work_status": _enum(job.work_status),
        "billing_status": _enum(job.billing_status),
        "completed_at": timestamp(job.completed_at),
        "completed_by": person(job.completed_by),
        "no_charge_reason": job.no_charge_reason,
        "currency": job.currency,
        "line_items": [line_item_json(item) for item in job.line_items],
        "totals": {"subtotal": totals.subtotal, "tax": totals.tax, "total": totals.total},
        "billing": billing_json(job.live_billing_record),
        "created_at": timestamp(job.created_at),
        "updated_at": timestamp(job.updated_at),
    }


def page_json(rows, has_more, serialize):
    """A page of a list, with the cursor for the next one."""
    return {
        "data": [serialize(row) for row in rows],
        "has_more": has_more,
        "next_cursor": rows[-1].id if has_more else None,
    }
