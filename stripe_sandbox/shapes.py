"""Stripe-shaped objects, built from Stripe's own published examples (`data/fixtures3.json`, MIT).

Every object starts as a deep copy of Stripe's example for its resource, so field names and nesting match the
current API exactly; the fields below are then reset where the example would mislead (ids of objects that do
not exist here, placeholder numbers, someone else's URLs), and each operation fills in the rest from state.
"""

import copy
import functools
import json
from importlib.resources import files

NULL_ADDRESS = {"city": None, "country": None, "line1": None, "line2": None, "postal_code": None, "state": None}
NULL_CUSTOM_TEXT = {"after_submit": None, "shipping_address": None, "submit": None, "terms_of_service_acceptance": None}
NULL_INVOICE_DATA = {
    "account_tax_ids": None,
    "custom_fields": None,
    "description": None,
    "footer": None,
    "issuer": {"type": "self"},
    "metadata": {},
    "rendering_options": None,
}

RESETS = {
    "account": {
        "business_profile": {"mcc": None, "name": None, "product_description": None, "support_address": None,
                             "support_email": None, "support_phone": None, "support_url": None, "url": None},
        "charges_enabled": True,
        "details_submitted": True,
        "email": None,
        "payouts_enabled": True,
        "requirements": {"alternatives": [], "current_deadline": None, "currently_due": [], "disabled_reason": None,
                         "errors": [], "eventually_due": [], "past_due": [], "pending_verification": []},
    },
    "charge": {
        "amount_captured": 0,
        "balance_transaction": None,
        "billing_details": {"address": NULL_ADDRESS, "email": None, "name": None, "phone": None, "tax_id": None},
        "captured": True,
        "description": None,
        "payment_method": None,
        "receipt_url": None,
        "source": None,
        "transfer_data": None,
    },
    "checkout.session": {
        "after_expiration": None,
        "cancel_url": None,
        "collected_information": None,
        "consent_collection": None,
        "currency_conversion": None,
        "custom_text": NULL_CUSTOM_TEXT,
        "customer_details": {"address": None, "business_name": None, "email": None, "individual_name": None,
                             "name": None, "phone": None, "tax_exempt": "none", "tax_ids": []},
        "discounts": [],
        "invoice_creation": {"enabled": False, "invoice_data": NULL_INVOICE_DATA},
        "payment_method_configuration_details": None,
        "permissions": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "success_url": None,
        "url": None,
        "wallet_options": None,
    },
    "customer": {"address": None, "currency": None, "discount": None, "shipping": None},
    "dispute": {"enhanced_eligibility_types": [], "is_charge_refundable": False, "status": "needs_response"},
    "invoice": {
        "account_name": "Closeout Sandbox",
        "amount_overpaid": 0,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None, "provider": None,
                          "status": None},
        "customer_address": None,
        "customer_shipping": None,
        "due_date": None,
        "effective_at": None,
        "from_invoice": None,
        "last_finalization_error": None,
        "next_payment_attempt": None,
        "parent": None,
        "payment_settings": {"default_mandate": None, "payment_method_options": None, "payment_method_types": None},
        "shipping_cost": None,
        "shipping_details": None,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": None,
    },
    "invoiceitem": {"parent": None, "discountable": True},
    "line_item": {"pretax_credit_amounts": [], "subtotal": 0, "taxes": []},
    "payment_intent": {
        "automatic_payment_methods": None,
        "canceled_at": None,
        "last_payment_error": None,
        "managed_payments": None,
        "next_action": None,
        "payment_method_configuration_details": None,
        "processing": None,
        "shipping": None,
        "transfer_data": None,
    },
    "payment_link": {
        "consent_collection": None,
        "custom_text": NULL_CUSTOM_TEXT,
        "invoice_creation": {"enabled": False, "invoice_data": NULL_INVOICE_DATA},
        "managed_payments": None,
        "payment_intent_data": None,
        "payment_method_options": None,
        "restrictions": None,
        "shipping_address_collection": None,
        "subscription_data": None,
        "transfer_data": None,
    },
    "price": {"custom_unit_amount": None, "recurring": None, "transform_quantity": None, "type": "one_time"},
    "product": {"default_price": None, "description": None, "package_dimensions": None},
    "refund": {"destination_details": {"card": {"reference": None, "reference_status": None, "reference_type": None,
                                                "type": "refund"}, "type": "card"}},
    "tax_rate": {"country": None, "description": None, "flat_amount": None, "jurisdiction": None,
                 "rate_type": "percentage", "tax_type": None},
    "transfer": {"balance_transaction": None, "destination_payment": None},
    "webhook_endpoint": {"description": None},
}

EXAMPLES = json.loads(files("stripe_sandbox").joinpath("data/fixtures3.json").read_text(encoding="utf-8"))["resources"]


@functools.cache
def _blank(resource):
    blank = copy.deepcopy(EXAMPLES[resource])
    blank.update(copy.deepcopy(RESETS.get(resource, {})))
    return blank


def shaped(resource, **fields):
    """A new object of a Stripe resource: the cleaned example, with `fields` laid over it."""
    obj = copy.deepcopy(_blank(resource))
    obj.update(fields)
    if "livemode" in obj:
        obj["livemode"] = False
    if "metadata" in obj and obj["metadata"] is None:
        obj["metadata"] = {}
    return obj


def list_object(data, url, has_more=False):
    """Stripe's list envelope."""
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def updated_metadata(current, update):
    """Stripe's metadata update: keys merge, an empty value unsets its key, an empty `metadata` unsets all."""
    if update == "":
        return {}
    merged = dict(current or {})
    for key, value in update.items():
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def deleted(obj):
    """What Stripe answers to a DELETE."""
    return {"id": obj["id"], "object": obj["object"], "deleted": True}


def apply_changes(obj, changes):
    """Set fields on a stored object; returns the old values of those that changed, for `previous_attributes`."""
    previous = {key: copy.deepcopy(obj.get(key)) for key, value in changes.items() if obj.get(key) != value}
    obj.update(changes)
    return previous
