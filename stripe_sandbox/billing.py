"""Customers, products, prices, tax rates, invoice items and invoices."""

import copy
import secrets
from decimal import Decimal

from stripe_sandbox.errors import StripeError, invalid_state, parameter_missing
from stripe_sandbox.listing import list_matching, paginate
from stripe_sandbox.money import decimal_text, round_half_up, tax_entry
from stripe_sandbox.shapes import apply_changes, deleted, list_object, shaped, updated_metadata
from stripe_sandbox.state import new_id, random_token

DAY_SECONDS = 24 * 60 * 60
ADDRESS_FIELDS = ("city", "country", "line1", "line2", "postal_code", "state")
CUSTOMER_FIELDS = ("balance", "description", "email", "name", "phone", "preferred_locales", "tax_exempt")


# ---------------------------------------------------------------- customers


def _address(value):
    if not value:
        return None
    return {field: value.get(field) for field in ADDRESS_FIELDS}


def _customer_changes(params):
    changes = {field: params[field] for field in CUSTOMER_FIELDS if field in params}
    if "address" in params:
        changes["address"] = _address(params["address"])
    if "invoice_prefix" in params:
        changes["invoice_prefix"] = params["invoice_prefix"]
    if "next_invoice_sequence" in params:
        changes["next_invoice_sequence"] = params["next_invoice_sequence"]
    return changes


def create_customer(sb, params):
    """POST /v1/customers"""
    customer = shaped(
        "customer",
        id=new_id("customer"),
        created=sb.clock.now(),
        email=None,
        invoice_prefix=secrets.token_hex(4).upper(),
        metadata=params.get("metadata") or {},
    )
    customer.update(_customer_changes(params))
    sb.store.add(customer)
    sb.emit("customer.created", customer)
    return customer


def retrieve_customer(sb, params, id):
    """GET /v1/customers/:id"""
    return sb.store.get("customer", id)


def update_customer(sb, params, id):
    """POST /v1/customers/:id"""
    customer = sb.store.get("customer", id)
    changes = _customer_changes(params)
    if "metadata" in params:
        changes["metadata"] = updated_metadata(customer["metadata"], params["metadata"])
    previous = apply_changes(customer, changes)
    if previous:
        sb.emit("customer.updated", customer, previous)
    return customer


def list_customers(sb, params):
    """GET /v1/customers"""
    return list_matching(sb.store.newest_first("customer"), params, "/v1/customers",
                         {"email": lambda customer: customer["email"]})


# ---------------------------------------------------------------- products and prices


def _new_product(sb, fields):
    product_id = fields.get("id") or new_id("product")
    if sb.store.find(product_id):
        raise StripeError(f"Product already exists: {product_id}", code="resource_already_exists", param="id")
    now = sb.clock.now()
    product = shaped(
        "product",
        id=product_id,
        active=fields.get("active", True),
        created=now,
        updated=now,
        description=fields.get("description"),
        images=fields.get("images", []),
        metadata=fields.get("metadata") or {},
        name=fields["name"],
        statement_descriptor=fields.get("statement_descriptor"),
        tax_code=fields.get("tax_code"),
        type=fields.get("type", "service"),
        unit_label=fields.get("unit_label"),
        url=fields.get("url"),
    )
    return sb.store.add(product)


def _unit_amount(price_data, param):
    if "unit_amount" in price_data:
        return Decimal(price_data["unit_amount"])
    if "unit_amount_decimal" in price_data:
        return price_data["unit_amount_decimal"]
    raise parameter_missing(f"{param}[unit_amount]")


def new_price(sb, price_data, param, *, product_id=None, active=True):
    """A Price from `price_data`-style fields, making its product from `product_data` when given."""
    if product_id is None:
        if "product" in price_data:
            product_id = sb.store.get("product", price_data["product"], param=f"{param}[product]")["id"]
        elif "product_data" in price_data:
            product_id = _new_product(sb, price_data["product_data"])["id"]
        else:
            raise parameter_missing(f"{param}[product]")
    unit_amount = _unit_amount(price_data, param)
    recurring = None
    if "recurring" in price_data:
        recurring = {
            "interval": price_data["recurring"]["interval"],
            "interval_count": price_data["recurring"].get("interval_count", 1),
            "meter": None,
            "trial_period_days": None,
            "usage_type": "licensed",
        }
    price = shaped(
        "price",
        id=new_id("price"),
        active=active,
        created=sb.clock.now(),
        currency=price_data["currency"].lower(),
        lookup_key=price_data.get("lookup_key"),
        metadata=price_data.get("metadata") or {},
        nickname=price_data.get("nickname"),
        product=product_id,
        recurring=recurring,
        tax_behavior=price_data.get("tax_behavior", "unspecified"),
        type="recurring" if recurring else "one_time",
        unit_amount=int(unit_amount) if unit_amount == int(unit_amount) else None,
        unit_amount_decimal=decimal_text(unit_amount),
    )
    return sb.store.add(price)


def create_product(sb, params):
    """POST /v1/products"""
    product = _new_product(sb, params)
    sb.emit("product.created", product)
    if "default_price_data" in params:
        price = new_price(sb, params["default_price_data"], "default_price_data", product_id=product["id"])
        product["default_price"] = price["id"]
        sb.emit("price.created", price)
    return product


def retrieve_product(sb, params, id):
    """GET /v1/products/:id"""
    return sb.store.get("product", id)


def list_products(sb, params):
    """GET /v1/products"""
    return list_matching(sb.store.newest_first("product"), params, "/v1/products",
                         {"active": lambda product: product["active"]})


def create_price(sb, params):
    """POST /v1/prices"""
    product_id = params.get("product")
    if product_id:
        sb.store.get("product", product_id, param="product")
    elif "product_data" in params:
        product_id = _new_product(sb, params["product_data"])["id"]
    else:
        raise parameter_missing("product")
    if "unit_amount" not in params and "unit_amount_decimal" not in params:
        raise parameter_missing("unit_amount")
    price = new_price(sb, params, "", product_id=product_id, active=params.get("active", True))
    sb.emit("price.created", price)
    return price


def retrieve_price(sb, params, id):
    """GET /v1/prices/:id"""
    return sb.store.get("price", id)


def list_prices(sb, params):
    """GET /v1/prices"""
    return list_matching(sb.store.newest_first("price"), params, "/v1/prices",
                         {"product": lambda price: price["product"], "active": lambda price: price["active"]})


# ---------------------------------------------------------------- tax rates


def _percentage(value):
    return int(value) if value == int(value) else float(value)


def create_tax_rate(sb, params):
    """POST /v1/tax_rates"""
    percentage = _percentage(params["percentage"])
    tax_rate = shaped(
        "tax_rate",
        id=new_id("tax_rate"),
        active=params.get("active", True),
        country=params.get("country"),
        created=sb.clock.now(),
        description=params.get("description"),
        display_name=params["display_name"],
        effective_percentage=percentage,
        inclusive=params["inclusive"],
        jurisdiction=params.get("jurisdiction"),
        metadata=params.get("metadata") or {},
        percentage=percentage,
        state=params.get("state"),
        tax_type=params.get("tax_type"),
    )
    sb.store.add(tax_rate)
    sb.emit("tax_rate.created", tax_rate)
    return tax_rate


def retrieve_tax_rate(sb, params, id):
    """GET /v1/tax_rates/:id"""
    return sb.store.get("tax_rate", id)


def list_tax_rates(sb, params):
    """GET /v1/tax_rates"""
    return list_matching(sb.store.newest_first("tax_rate"), params, "/v1/tax_rates",
                         {"active": lambda rate: rate["active"], "inclusive": lambda rate: rate["inclusive"]})


def _tax_rates(sb, ids, param):
    return [copy.deepcopy(sb.store.get("tax_rate", rate_id, param=f"{param}[{index}]"))
            for index, rate_id in enumerate(ids or [])]


# ---------------------------------------------------------------- invoice items


def _draft_invoice_for_items(sb, invoice_id, customer_id):
    invoice = sb.store.get("invoice", invoice_id, param="invoice")
    if invoice["status"] != "draft":
        raise invalid_state(
            f"You can only add invoice items to draft invoices; invoice {invoice_id} is {invoice['status']}.",
            code="invoice_not_editable", param="invoice",
        )
    if invoice["customer"] != customer_id:
        raise invalid_state(f"Invoice {invoice_id} belongs to a different customer than {customer_id}.",
                            param="invoice")
    return invoice


def _item_pricing(sb, params, quantity):
    """The (amount, currency, unit_amount_decimal, price_id, product_id) an invoice item's parameters describe."""
    if "price_data" in params:
        price = new_price(sb, params["price_data"], "price_data", active=False)
    elif "pricing" in params and "price" in params["pricing"]:
        price = sb.store.get("price", params["pricing"]["price"], param="pricing[price]")
    else:
        price = None
    if price is not None:
        unit = Decimal(price["unit_amount_decimal"])
        return round_half_up(unit * quantity), price["currency"], unit, price["id"], price["product"]
    if "amount" in params:
        unit = Decimal(params["amount"]) / quantity if quantity else Decimal(0)
        return params["amount"], params.get("currency"), unit, None, None
    if "unit_amount_decimal" in params:
        unit = params["unit_amount_decimal"]
        return round_half_up(unit * quantity), params.get("currency"), unit, None, None
    raise StripeError(
        "You must specify one of amount, unit_amount_decimal, price_data or pricing[price].",
        code="parameter_missing", param="amount",
    )


def create_invoice_item(sb, params):
    """POST /v1/invoiceitems"""
    if "customer" not in params:
        raise parameter_missing("customer")
    customer = sb.store.get("customer", params["customer"], param="customer")
    invoice = _draft_invoice_for_items(sb, params["invoice"], customer["id"]) if "invoice" in params else None
    quantity = params.get("quantity", 1)
    tax_rates = _tax_rates(sb, params.get("tax_rates"), "tax_rates")
    amount, currency, unit, price_id, product_id = _item_pricing(sb, params, quantity)
    currency = (currency or (invoice or {}).get("currency") or customer["currency"] or "usd").lower()
    if invoice is not None and currency != invoice["currency"]:
        raise invalid_state(f"The currency {currency} does not match the invoice's currency {invoice['currency']}.",
                            param="currency")
    now = sb.clock.now()
    item = shaped(
        "invoiceitem",
        id=new_id("invoiceitem"),
        amount=amount,
        currency=currency,
        customer=customer["id"],
        date=now,
        description=params.get("description"),
        discountable=params.get("discountable", True),
        invoice=invoice["id"] if invoice else None,
        metadata=params.get("metadata") or {},
        net_amount=amount,
        period=params.get("period") or {"end": now, "start": now},
        pricing={
            "price_details": {"price": price_id, "product": product_id} if price_id else None,
            "type": "price_details",
            "unit_amount_decimal": decimal_text(unit),
        },
        quantity=quantity,
        quantity_decimal=str(quantity),
        tax_rates=tax_rates,
    )
    sb.store.add(item)
    if customer["currency"] is None:
        customer["currency"] = currency
    sb.emit("invoiceitem.created", item)
    if invoice is not None:
        _attach_item(invoice, item)
    return item


def retrieve_invoice_item(sb, params, id):
    """GET /v1/invoiceitems/:id"""
    return sb.store.get("invoiceitem", id)


def list_invoice_items(sb, params):
    """GET /v1/invoiceitems"""
    items = sb.store.newest_first("invoiceitem")
    if params.get("pending"):
        items = [item for item in items if item["invoice"] is None]
    return list_matching(items, params, "/v1/invoiceitems",
                         {"customer": lambda item: item["customer"], "invoice": lambda item: item["invoice"]})


def delete_invoice_item(sb, params, id):
    """DELETE /v1/invoiceitems/:id"""
    item = sb.store.get("invoiceitem", id)
    if item["invoice"]:
        invoice = sb.store.get("invoice", item["invoice"])
        if invoice["status"] != "draft":
            raise invalid_state("Invoice items on finalized invoices cannot be deleted.", code="invoice_not_editable")
        invoice["lines"]["data"] = [
            line for line in invoice["lines"]["data"]
            if line["parent"]["invoice_item_details"]["invoice_item"] != id
        ]
        refresh_totals(invoice)
    sb.store.remove("invoiceitem", id)
    sb.emit("invoiceitem.deleted", item)
    return deleted(item)


# ---------------------------------------------------------------- invoices


def _line_for(item, invoice):
    tax_rates = item["tax_rates"] or invoice["default_tax_rates"]
    return shaped(
        "line_item",
        id=f"il_{random_token(24)}",
        amount=item["amount"],
        currency=item["currency"],
        description=item["description"],
        discount_amounts=[],
        discountable=item["discountable"],
        discounts=[],
        invoice=invoice["id"],
        metadata=copy.deepcopy(item["metadata"]),
        parent={
            "invoice_item_details": {
                "invoice_item": item["id"],
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": None,
            },
            "subscription_item_details": None,
            "type": "invoice_item_details",
        },
        period=copy.deepcopy(item["period"]),
        pricing=copy.deepcopy(item["pricing"]),
        quantity=item["quantity"],
        quantity_decimal=item["quantity_decimal"],
        subscription=None,
        subtotal=item["amount"],
        taxes=[tax_entry(item["amount"], rate) for rate in tax_rates],
    )


def refresh_totals(invoice):
    """Recompute an invoice's totals from its lines: tax per line, rounded half up, then summed."""
    lines = invoice["lines"]["data"]
    subtotal = sum(line["amount"] for line in lines)
    by_rate = {}
    for line in lines:
        for tax in line["taxes"]:
            rate_id = tax["tax_rate_details"]["tax_rate"]
            total = by_rate.setdefault(rate_id, dict(tax, amount=0, taxable_amount=0))
            total["amount"] += tax["amount"]
            total["taxable_amount"] += tax["taxable_amount"]
    exclusive = sum(tax["amount"] for tax in by_rate.values() if tax["tax_behavior"] == "exclusive")
    inclusive = sum(tax["amount"] for tax in by_rate.values() if tax["tax_behavior"] == "inclusive")
    total = subtotal + exclusive
    invoice.update(
        subtotal=subtotal,
        subtotal_excluding_tax=subtotal - inclusive,
        total=total,
        total_excluding_tax=subtotal - inclusive,
        total_taxes=list(by_rate.values()),
        amount_due=total,
        amount_remaining=max(0, total - invoice["amount_paid"]),
    )


def _attach_item(invoice, item):
    invoice["lines"]["data"].append(_line_for(item, invoice))
    refresh_totals(invoice)


def _custom_fields(value):
    return [{"name": field["name"], "value": field["value"]} for field in value] if value else None


def create_invoice(sb, params):
    """POST /v1/invoices"""
    if "customer" not in params:
        raise parameter_missing("customer")
    customer = sb.store.get("customer", params["customer"], param="customer")
    collection_method = params.get("collection_method", "charge_automatically")
    days_until_due, due_date = params.get("days_until_due"), params.get("due_date")
    if collection_method == "send_invoice" and days_until_due is None and due_date is None:
        raise parameter_missing("days_until_due")
    if collection_method != "send_invoice" and (days_until_due is not None or due_date is not None):
        raise StripeError("Invoices with collection_method=charge_automatically cannot have a due date.",
                          param="days_until_due" if days_until_due is not None else "due_date")
    now = sb.clock.now()
    invoice_id = new_id("invoice")
    currency = (params.get("currency") or customer["currency"] or "usd").lower()
    invoice = shaped(
        "invoice",
        id=invoice_id,
        amount_due=0,
        amount_paid=0,
        amount_remaining=0,
        attempt_count=0,
        attempted=False,
        auto_advance=params.get("auto_advance", False),
        collection_method=collection_method,
        created=now,
        currency=currency,
        custom_fields=_custom_fields(params.get("custom_fields")),
        customer=customer["id"],
        customer_address=copy.deepcopy(customer["address"]),
        customer_email=customer["email"],
        customer_name=customer["name"],
        customer_phone=customer["phone"],
        customer_tax_exempt=customer["tax_exempt"],
        default_tax_rates=_tax_rates(sb, params.get("default_tax_rates"), "default_tax_rates"),
        description=params.get("description"),
        due_date=due_date if due_date is not None else (
            now + days_until_due * DAY_SECONDS if days_until_due is not None else None),
        footer=params.get("footer"),
        lines=list_object([], f"/v1/invoices/{invoice_id}/lines"),
        metadata=params.get("metadata") or {},
        number=params.get("number"),
        period_end=now,
        period_start=now,
        statement_descriptor=params.get("statement_descriptor"),
        status="draft",
        status_transitions={"finalized_at": None, "marked_uncollectible_at": None, "paid_at": None,
                            "voided_at": None},
        subtotal=0,
        subtotal_excluding_tax=0,
        total=0,
        total_excluding_tax=0,
    )
    sb.store.add(invoice)
    if days_until_due is not None:
        sb.days_until_due[invoice_id] = days_until_due
    if params.get("pending_invoice_items_behavior") == "include":
        for item in reversed(sb.store.newest_first("invoiceitem")):
            if item["customer"] == customer["id"] and item["invoice"] is None and item["currency"] == currency:
                item["invoice"] = invoice_id
                _attach_item(invoice, item)
    sb.emit("invoice.created", invoice)
    return invoice


def retrieve_invoice(sb, params, id):
    """GET /v1/invoices/:id"""
    return sb.store.get("invoice", id)


def list_invoices(sb, params):
    """GET /v1/invoices"""
    return list_matching(sb.store.newest_first("invoice"), params, "/v1/invoices", {
        "customer": lambda invoice: invoice["customer"],
        "status": lambda invoice: invoice["status"],
        "collection_method": lambda invoice: invoice["collection_method"],
    })


def list_invoice_lines(sb, params, id):
    """GET /v1/invoices/:id/lines"""
    invoice = sb.store.get("invoice", id)
    return paginate(invoice["lines"]["data"], params, f"/v1/invoices/{id}/lines")


DRAFT_ONLY_UPDATES = ("collection_method", "days_until_due", "due_date", "default_tax_rates", "currency")


def update_invoice(sb, params, id):
    """POST /v1/invoices/:id"""
    invoice = sb.store.get("invoice", id)
    if invoice["status"] in ("paid", "void"):
        editable = {"metadata"}
    elif invoice["status"] == "draft":
        editable = set(params)
    else:
        editable = set(params) - set(DRAFT_ONLY_UPDATES)
    refused = sorted(set(params) - editable - {"expand"})
    if refused:
        raise invalid_state(f"You cannot update {refused[0]} on a {invoice['status']} invoice.",
                            code="invoice_not_editable", param=refused[0])
    changes = {}
    for name in ("auto_advance", "collection_method", "description", "footer", "statement_descriptor", "number"):
        if name in params:
            changes[name] = params[name]
    if "custom_fields" in params:
        changes["custom_fields"] = _custom_fields(params["custom_fields"])
    if "metadata" in params:
        changes["metadata"] = updated_metadata(invoice["metadata"], params["metadata"])
    if "days_until_due" in params:
        sb.days_until_due[id] = params["days_until_due"]
        changes["due_date"] = invoice["created"] + params["days_until_due"] * DAY_SECONDS
    if "due_date" in params:
        sb.days_until_due.pop(id, None)
        changes["due_date"] = params["due_date"]
    if "default_tax_rates" in params:
        changes["default_tax_rates"] = _tax_rates(sb, params["default_tax_rates"], "default_tax_rates")
    previous = apply_changes(invoice, changes)
    if "default_tax_rates" in changes:
        items = [sb.store.get("invoiceitem", line["parent"]["invoice_item_details"]["invoice_item"])
                 for line in invoice["lines"]["data"]]
        invoice["lines"]["data"] = [_line_for(item, invoice) for item in items]
        refresh_totals(invoice)
    if previous:
        sb.emit("invoice.updated", invoice, previous)
    return invoice


def delete_invoice(sb, params, id):
    """DELETE /v1/invoices/:id"""
    invoice = sb.store.get("invoice", id)
    if invoice["status"] != "draft":
        raise invalid_state("You can only delete draft invoices.", code="invoice_not_editable")
    for item in sb.store.objects["invoiceitem"].values():
        if item["invoice"] == id:
            item["invoice"] = None
    sb.store.remove("invoice", id)
    sb.emit("invoice.deleted", invoice)
    return deleted(invoice)


def finalize(sb, invoice):
    """Give a draft its number, due date and hosted URLs, and open it for payment."""
    if invoice["status"] != "draft":
        raise invalid_state("This invoice is already finalized, you can't re-finalize a non-draft invoice.",
                            code="invoice_not_editable")
    customer = sb.store.get("customer", invoice["customer"])
    now = sb.clock.now()
    number = invoice["number"]
    if number is None:
        number = f"{customer['invoice_prefix']}-{customer['next_invoice_sequence']:04d}"
        customer["next_invoice_sequence"] += 1
    days = sb.days_until_due.get(invoice["id"])
    previous = apply_changes(invoice, {
        "status": "open",
        "number": number,
        "effective_at": now,
        "due_date": now + days * DAY_SECONDS if days is not None else invoice["due_date"],
        "hosted_invoice_url": f"{sb.public_url}/invoices/{invoice['id']}",
        "invoice_pdf": f"{sb.public_url}/invoices/{invoice['id']}/pdf",
    })
    invoice["status_transitions"]["finalized_at"] = now
    sb.emit("invoice.finalized", invoice, previous)
    if invoice["amount_due"] == 0:
        # Stripe marks a zero-amount invoice paid as soon as it is finalized.
        mark_paid(sb, invoice, with_payment=False)


def finalize_invoice(sb, params, id):
    """POST /v1/invoices/:id/finalize"""
    invoice = sb.store.get("invoice", id)
    finalize(sb, invoice)
    return invoice


def send_invoice(sb, params, id):
    """POST /v1/invoices/:id/send"""
    invoice = sb.store.get("invoice", id)
    if invoice["collection_method"] != "send_invoice":
        raise invalid_state("You can only manually send an invoice if its collection method is 'send_invoice'.")
    if invoice["status"] == "draft":
        finalize(sb, invoice)
    if invoice["status"] not in ("open", "paid"):
        raise invalid_state(f"You can't send an invoice that is {invoice['status']}.")
    sb.emit("invoice.sent", invoice)
    return invoice


def mark_paid(sb, invoice, *, with_payment):
    """The invoice is paid in full: by a payment, out of band, or because nothing was due."""
    now = sb.clock.now()
    previous = apply_changes(invoice, {
        "status": "paid",
        "amount_paid": invoice["amount_due"],
        "amount_remaining": 0,
    })
    invoice["status_transitions"]["paid_at"] = now
    sb.emit("invoice.paid", invoice, previous)
    if with_payment:
        sb.emit("invoice.payment_succeeded", invoice, previous)


def _invoice_payment_of(sb, invoice_id):
    return next((payment for payment in sb.store.objects["invoice_payment"].values()
                 if payment["invoice"] == invoice_id), None)


def pay_invoice(sb, params, id):
    """POST /v1/invoices/:id/pay — out of band only; customers pay through the hosted page or the controls."""
    invoice = sb.store.get("invoice", id)
    if invoice["status"] == "draft":
        finalize(sb, invoice)
        if invoice["status"] == "paid":
            return invoice
    if invoice["status"] == "paid":
        raise invalid_state("Invoice is already paid.")
    if invoice["status"] == "void":
        raise invalid_state("This invoice has been voided and can no longer be paid.")
    intent = sb.store.objects["payment_intent"].get(sb.invoice_intent.get(id, ""))
    if intent is not None and intent["status"] == "processing":
        raise invalid_state("This invoice has a payment processing; wait for it to succeed or fail.",
                            code="invoice_payment_intent_requires_action")
    if not params.get("paid_out_of_band"):
        raise StripeError(
            "This customer has no attached payment source or default payment method. "
            "(stripe-sandbox: have the customer pay on the hosted invoice page or through "
            "POST /_sandbox/invoices/:id/pay, or pass paid_out_of_band=true.)",
            code="invoice_no_payment_method_types",
        )
    _cancel_open_payment(sb, id, intent, reason="automatic")
    mark_paid(sb, invoice, with_payment=False)
    return invoice


def _cancel_open_payment(sb, invoice_id, intent, reason):
    """An invoice settled another way no longer needs its unfinished PaymentIntent."""
    if intent is not None and intent["status"] == "requires_payment_method":
        intent.update(status="canceled", canceled_at=sb.clock.now(), cancellation_reason=reason)
    payment = _invoice_payment_of(sb, invoice_id)
    if payment is not None and payment["status"] == "open":
        payment["status"] = "canceled"
        payment["status_transitions"]["canceled_at"] = sb.clock.now()


def void_invoice(sb, params, id):
    """POST /v1/invoices/:id/void"""
    invoice = sb.store.get("invoice", id)
    if invoice["status"] not in ("open", "uncollectible"):
        raise invalid_state(f"You can only void open or uncollectible invoices; this invoice is {invoice['status']}.")
    intent = sb.store.objects["payment_intent"].get(sb.invoice_intent.get(id, ""))
    if intent is not None and intent["status"] == "processing":
        raise invalid_state("This invoice has a payment processing and cannot be voided.")
    _cancel_open_payment(sb, id, intent, reason="void_invoice")
    previous = apply_changes(invoice, {"status": "void"})
    invoice["status_transitions"]["voided_at"] = sb.clock.now()
    sb.emit("invoice.voided", invoice, previous)
    return invoice


def mark_uncollectible(sb, params, id):
    """POST /v1/invoices/:id/mark_uncollectible"""
    invoice = sb.store.get("invoice", id)
    if invoice["status"] != "open":
        raise invalid_state(f"You can only mark open invoices uncollectible; this invoice is {invoice['status']}.")
    previous = apply_changes(invoice, {"status": "uncollectible"})
    invoice["status_transitions"]["marked_uncollectible_at"] = sb.clock.now()
    sb.emit("invoice.marked_uncollectible", invoice, previous)
    return invoice


def report_overdue(sb):
    """Emit `invoice.overdue`, once per invoice, for every open invoice whose due date has passed."""
    now = sb.clock.now()
    for invoice in list(sb.store.objects["invoice"].values()):
        due = invoice["due_date"]
        if invoice["status"] == "open" and due is not None and due < now and invoice["id"] not in sb.overdue_reported:
            sb.overdue_reported.add(invoice["id"])
            sb.emit("invoice.overdue", invoice)


# ---------------------------------------------------------------- invoice payments


def retrieve_invoice_payment(sb, params, id):
    """GET /v1/invoice_payments/:id"""
    return sb.store.get("invoice_payment", id)


def list_invoice_payments(sb, params):
    """GET /v1/invoice_payments"""
    payments = sb.store.newest_first("invoice_payment")
    wanted_intent = (params.get("payment") or {}).get("payment_intent")
    if wanted_intent:
        payments = [payment for payment in payments if payment["payment"].get("payment_intent") == wanted_intent]
    return list_matching(payments, params, "/v1/invoice_payments", {
        "invoice": lambda payment: payment["invoice"],
        "status": lambda payment: payment["status"],
    })
