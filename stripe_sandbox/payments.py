"""Payment links, checkout sessions, PaymentIntents, charges, refunds and disputes, and how customers pay.

A customer's payment has one of three outcomes: `card` succeeds at once, `card_declined` fails at once, and
`bank_debit` stays `processing` until `settle` decides it, as a US bank debit does over several days.
"""

import copy
from decimal import Decimal

from stripe_sandbox import billing
from stripe_sandbox.errors import StripeError, invalid_state, parameter_missing
from stripe_sandbox.listing import list_matching, paginate
from stripe_sandbox.money import format_amount, round_half_up
from stripe_sandbox.shapes import apply_changes, list_object, shaped, updated_metadata
from stripe_sandbox.state import new_id, random_token

OUTCOMES = ("card", "card_declined", "bank_debit")
SETTLEMENTS = ("succeeded", "failed")
MAX_PAYMENT_LINK_ITEMS = 20
DAY_SECONDS = 24 * 60 * 60

CARD_DETAILS = {
    "card": {
        "amount_authorized": None, "authorization_code": None, "brand": "visa",
        "checks": {"address_line1_check": None, "address_postal_code_check": None, "cvc_check": "pass"},
        "country": "US", "exp_month": 12, "exp_year": 2034, "extended_authorization": {"status": "disabled"},
        "fingerprint": None, "funding": "credit", "incremental_authorization": {"status": "unavailable"},
        "installments": None, "last4": "4242", "mandate": None, "multicapture": {"status": "unavailable"},
        "network": "visa", "network_token": {"used": False}, "network_transaction_id": None,
        "overcapture": {"maximum_amount_capturable": 0, "status": "unavailable"}, "regulated_status": "unregulated",
        "three_d_secure": None, "wallet": None,
    },
    "type": "card",
}
DECLINED_CARD_DETAILS = copy.deepcopy(CARD_DETAILS)
DECLINED_CARD_DETAILS["card"]["last4"] = "0002"
BANK_DEBIT_DETAILS = {
    "type": "us_bank_account",
    "us_bank_account": {
        "account_holder_type": "individual", "account_type": "checking", "bank_name": "STRIPE TEST BANK",
        "expected_debit_date": None, "fingerprint": None, "last4": "6789", "mandate": None, "payment_reference": None,
        "routing_number": "110000000",
    },
}
APPROVED = {
    "advice_code": None, "network_advice_code": None, "network_decline_code": None,
    "network_status": "approved_by_network", "reason": None, "risk_level": "normal", "risk_score": 20,
    "seller_message": "Payment complete.", "type": "authorized",
}
DECLINED = {
    "advice_code": "try_again_later", "network_advice_code": None, "network_decline_code": None,
    "network_status": "declined_by_network", "reason": "generic_decline", "risk_level": "normal", "risk_score": 20,
    "seller_message": "The bank did not return any further details with this decline.", "type": "issuer_declined",
}
FAILURES = {
    "card_declined": ("card_declined", "generic_decline", "Your card was declined."),
    "bank_debit": ("insufficient_funds", None, "The customer's account has insufficient funds to cover this payment."),
}


# ---------------------------------------------------------------- payment links


def _link_item(sb, line, index):
    param = f"line_items[{index}]"
    if "price_data" in line:
        price = billing.new_price(sb, line["price_data"], f"{param}[price_data]", active=False)
    elif "price" in line:
        price = sb.store.get("price", line["price"], param=f"{param}[price]")
    else:
        raise parameter_missing(f"{param}[price]")
    quantity = line["quantity"]
    if quantity < 1:
        raise StripeError("Quantity must be at least 1.", param=f"{param}[quantity]")
    product = sb.store.get("product", price["product"])
    amount = round_half_up(Decimal(price["unit_amount_decimal"]) * quantity)
    return shaped(
        "item",
        id=f"li_{random_token(24)}",
        adjustable_quantity=line.get("adjustable_quantity"),
        amount_discount=0,
        amount_subtotal=amount,
        amount_tax=0,
        amount_total=amount,
        currency=price["currency"],
        description=product["name"],
        metadata={},
        price=copy.deepcopy(price),
        quantity=quantity,
    )


def _after_completion(value):
    value = value or {"type": "hosted_confirmation"}
    if value["type"] == "redirect":
        if "redirect" not in value:
            raise parameter_missing("after_completion[redirect]")
        return {"redirect": {"url": value["redirect"]["url"]}, "type": "redirect"}
    message = value.get("hosted_confirmation", {}).get("custom_message")
    return {"hosted_confirmation": {"custom_message": message}, "type": "hosted_confirmation"}


def _payment_intent_data(value):
    if value is None:
        return None
    return {
        "capture_method": value.get("capture_method"),
        "description": value.get("description"),
        "metadata": value.get("metadata") or {},
        "setup_future_usage": value.get("setup_future_usage"),
        "statement_descriptor": value.get("statement_descriptor"),
        "statement_descriptor_suffix": value.get("statement_descriptor_suffix"),
        "transfer_group": value.get("transfer_group"),
    }


def create_payment_link(sb, params):
    """POST /v1/payment_links"""
    lines = params["line_items"]
    if not lines:
        raise parameter_missing("line_items")
    if len(lines) > MAX_PAYMENT_LINK_ITEMS:
        raise StripeError(
            f"A payment link can have at most {MAX_PAYMENT_LINK_ITEMS} line items; you passed {len(lines)}.",
            param="line_items",
        )
    after_completion = _after_completion(params.get("after_completion"))
    items = [_link_item(sb, line, index) for index, line in enumerate(lines)]
    currencies = {item["currency"] for item in items}
    if len(currencies) > 1:
        raise StripeError("All line items must use the same currency.", param="line_items")
    link_id = new_id("payment_link")
    link = shaped(
        "payment_link",
        id=link_id,
        active=True,
        after_completion=after_completion,
        allow_promotion_codes=params.get("allow_promotion_codes", False),
        billing_address_collection=params.get("billing_address_collection", "auto"),
        currency=currencies.pop(),
        custom_fields=[],
        customer_creation=params.get("customer_creation", "if_required"),
        inactive_message=params.get("inactive_message"),
        metadata=params.get("metadata") or {},
        on_behalf_of=params.get("on_behalf_of"),
        payment_intent_data=_payment_intent_data(params.get("payment_intent_data")),
        payment_method_types=params.get("payment_method_types"),
        shipping_options=[],
        submit_type=params.get("submit_type", "auto"),
        url=f"{sb.public_url}/pay/{link_id}",
    )
    sb.store.add(link)
    sb.line_items[link_id] = items
    sb.emit("payment_link.created", link)
    return link


def retrieve_payment_link(sb, params, id):
    """GET /v1/payment_links/:id"""
    return sb.store.get("payment_link", id)


def list_payment_links(sb, params):
    """GET /v1/payment_links"""
    return list_matching(sb.store.newest_first("payment_link"), params, "/v1/payment_links",
                         {"active": lambda link: link["active"]})


def update_payment_link(sb, params, id):
    """POST /v1/payment_links/:id — `active`, `metadata`, `after_completion`, `inactive_message`."""
    link = sb.store.get("payment_link", id)
    changes = {}
    if "active" in params:
        changes["active"] = params["active"]
    if "metadata" in params:
        changes["metadata"] = updated_metadata(link["metadata"], params["metadata"])
    if "after_completion" in params:
        changes["after_completion"] = _after_completion(params["after_completion"])
    if "inactive_message" in params:
        changes["inactive_message"] = params["inactive_message"] or None
    if "payment_intent_data" in params:
        changes["payment_intent_data"] = _payment_intent_data(params["payment_intent_data"])
    previous = apply_changes(link, changes)
    if previous:
        sb.emit("payment_link.updated", link, previous)
    return link


def list_payment_link_items(sb, params, id):
    """GET /v1/payment_links/:id/line_items"""
    sb.store.get("payment_link", id)
    return paginate(sb.line_items[id], params, f"/v1/payment_links/{id}/line_items")


# ---------------------------------------------------------------- checkout sessions


def retrieve_session(sb, params, id):
    """GET /v1/checkout/sessions/:id"""
    return sb.store.get("checkout.session", id)


def list_sessions(sb, params):
    """GET /v1/checkout/sessions"""
    return list_matching(sb.store.newest_first("checkout.session"), params, "/v1/checkout/sessions", {
        "payment_link": lambda session: session["payment_link"],
        "payment_intent": lambda session: session["payment_intent"],
        "status": lambda session: session["status"],
        "customer": lambda session: session["customer"],
    })


def list_session_items(sb, params, id):
    """GET /v1/checkout/sessions/:id/line_items"""
    sb.store.get("checkout.session", id)
    return paginate(sb.line_items[id], params, f"/v1/checkout/sessions/{id}/line_items")


# ---------------------------------------------------------------- payment intents and charges


def retrieve_payment_intent(sb, params, id):
    """GET /v1/payment_intents/:id"""
    return sb.store.get("payment_intent", id)


def list_payment_intents(sb, params):
    """GET /v1/payment_intents"""
    return list_matching(sb.store.newest_first("payment_intent"), params, "/v1/payment_intents",
                         {"customer": lambda intent: intent["customer"]})


def retrieve_charge(sb, params, id):
    """GET /v1/charges/:id"""
    return sb.store.get("charge", id)


def list_charges(sb, params):
    """GET /v1/charges"""
    return list_matching(sb.store.newest_first("charge"), params, "/v1/charges", {
        "customer": lambda charge: charge["customer"],
        "payment_intent": lambda charge: charge["payment_intent"],
        "transfer_group": lambda charge: charge["transfer_group"],
    })


def _new_intent(sb, *, amount, currency, customer, description, metadata, transfer_group):
    intent_id = new_id("payment_intent")
    intent = shaped(
        "payment_intent",
        id=intent_id,
        amount=amount,
        amount_capturable=0,
        amount_received=0,
        client_secret=f"{intent_id}_secret_{random_token(25)}",
        created=sb.clock.now(),
        currency=currency,
        customer=customer,
        description=description,
        latest_charge=None,
        metadata=copy.deepcopy(metadata or {}),
        payment_method_types=["card", "us_bank_account"],
        status="requires_payment_method",
        transfer_group=transfer_group,
    )
    sb.store.add(intent)
    sb.emit("payment_intent.created", intent)
    return intent


def _attempt(sb, intent, outcome):
    """One attempt to collect a PaymentIntent: a new charge, then the intent moves as the outcome says."""
    method_details = {"card": CARD_DETAILS, "card_declined": DECLINED_CARD_DETAILS,
                      "bank_debit": BANK_DEBIT_DETAILS}[outcome]
    charge = shaped(
        "charge",
        id=new_id("charge"),
        amount=intent["amount"],
        amount_refunded=0,
        created=sb.clock.now(),
        currency=intent["currency"],
        customer=intent["customer"],
        description=intent["description"],
        disputed=False,
        failure_code=None,
        failure_message=None,
        metadata=copy.deepcopy(intent["metadata"]),
        outcome=copy.deepcopy(APPROVED),
        paid=False,
        payment_intent=intent["id"],
        payment_method_details=copy.deepcopy(method_details),
        refunded=False,
        refunds=list_object([], "/v1/charges/placeholder/refunds"),
        status="pending",
        transfer_group=intent["transfer_group"],
    )
    charge["refunds"]["url"] = f"/v1/charges/{charge['id']}/refunds"
    sb.store.add(charge)
    intent["latest_charge"] = charge["id"]
    if outcome == "card":
        _succeed(sb, intent, charge)
    elif outcome == "card_declined":
        _fail(sb, intent, charge, outcome)
    else:
        intent["status"] = "processing"
        sb.emit("charge.pending", charge)
        sb.emit("payment_intent.processing", intent)
    return charge


def _succeed(sb, intent, charge):
    charge.update(status="succeeded", paid=True, amount_captured=charge["amount"], outcome=copy.deepcopy(APPROVED))
    intent.update(status="succeeded", amount_received=intent["amount"], last_payment_error=None)
    sb.credit(charge["currency"], charge["amount"])
    sb.emit("charge.succeeded", charge)
    sb.emit("payment_intent.succeeded", intent)


def _fail(sb, intent, charge, outcome):
    code, decline_code, message = FAILURES[outcome]
    charge.update(status="failed", paid=False, captured=False, failure_code=code, failure_message=message,
                  outcome=copy.deepcopy(DECLINED))
    intent.update(status="requires_payment_method", last_payment_error={
        "charge": charge["id"],
        "code": code,
        "decline_code": decline_code,
        "doc_url": f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}",
        "message": message,
        "payment_method": None,
        "type": "card_error",
    })
    sb.emit("charge.failed", charge)
    sb.emit("payment_intent.payment_failed", intent)


def _check_outcome(outcome, allowed=OUTCOMES):
    if outcome not in allowed:
        raise StripeError(f"outcome must be one of {', '.join(allowed)}", param="outcome")


# ---------------------------------------------------------------- customers paying


def pay_invoice(sb, invoice_id, outcome):
    """A customer pays an open invoice on its hosted page; returns the invoice."""
    _check_outcome(outcome)
    invoice = sb.store.get("invoice", invoice_id)
    if invoice["status"] not in ("open", "uncollectible"):
        raise invalid_state(f"This invoice is {invoice['status']} and cannot be paid.")
    intent = sb.store.objects["payment_intent"].get(sb.invoice_intent.get(invoice_id, ""))
    if intent is not None and intent["status"] == "processing":
        raise invalid_state("A payment for this invoice is already processing.")
    if intent is None:
        intent = _new_intent(sb, amount=invoice["amount_remaining"], currency=invoice["currency"],
                             customer=invoice["customer"], description=f"Invoice {invoice['number']}",
                             metadata={}, transfer_group=None)
        sb.invoice_intent[invoice_id] = intent["id"]
        sb.intent_purpose[intent["id"]] = ("invoice", invoice_id)
        sb.store.add(shaped(
            "invoice_payment",
            id=new_id("invoice_payment"),
            amount_paid=None,
            amount_requested=intent["amount"],
            created=sb.clock.now(),
            currency=intent["currency"],
            invoice=invoice_id,
            is_default=True,
            payment={"payment_intent": intent["id"], "type": "payment_intent"},
            status="open",
            status_transitions={"canceled_at": None, "paid_at": None},
        ))
    invoice["attempt_count"] += 1
    invoice["attempted"] = True
    _attempt(sb, intent, outcome)
    _after_invoice_attempt(sb, invoice, intent)
    return invoice


def _after_invoice_attempt(sb, invoice, intent):
    if intent["status"] == "succeeded":
        payment = next(payment for payment in sb.store.objects["invoice_payment"].values()
                       if payment["payment"]["payment_intent"] == intent["id"])
        payment.update(status="paid", amount_paid=intent["amount"])
        payment["status_transitions"]["paid_at"] = sb.clock.now()
        billing.mark_paid(sb, invoice, with_payment=True)
        sb.emit("invoice_payment.paid", payment)
    elif intent["status"] == "requires_payment_method":
        sb.emit("invoice.payment_failed", invoice)


def pay_payment_link(sb, link_id, outcome, customer_details=None):
    """A customer pays through a payment link; returns the checkout session that records it."""
    _check_outcome(outcome)
    link = sb.store.get("payment_link", link_id)
    if not link["active"]:
        raise invalid_state(link["inactive_message"] or "This payment link is no longer active.")
    items = [dict(copy.deepcopy(item), id=f"li_{random_token(24)}") for item in sb.line_items[link_id]]
    amount = sum(item["amount_total"] for item in items)
    intent_data = link["payment_intent_data"] or {}
    intent = _new_intent(sb, amount=amount, currency=link["currency"], customer=None,
                         description=intent_data.get("description"), metadata=intent_data.get("metadata"),
                         transfer_group=intent_data.get("transfer_group"))
    now = sb.clock.now()
    session = shaped(
        "checkout.session",
        id=new_id("checkout.session"),
        adaptive_pricing={"enabled": False},
        amount_subtotal=amount,
        amount_total=amount,
        automatic_tax={"enabled": False, "liability": None, "provider": None, "status": None},
        billing_address_collection=link["billing_address_collection"],
        created=now,
        currency=link["currency"],
        customer=None,
        customer_creation=link["customer_creation"],
        expires_at=now + DAY_SECONDS,
        metadata=copy.deepcopy(link["metadata"]),
        mode="payment",
        payment_intent=intent["id"],
        payment_link=link_id,
        payment_method_types=["card", "us_bank_account"],
        payment_status="unpaid",
        status="open",
        submit_type=link["submit_type"],
        total_details={"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        ui_mode="hosted",
    )
    session["customer_details"].update(customer_details or {})
    sb.store.add(session)
    sb.line_items[session["id"]] = items
    sb.intent_purpose[intent["id"]] = ("checkout.session", session["id"])
    _attempt(sb, intent, outcome)
    if intent["status"] != "requires_payment_method":
        session.update(status="complete", payment_status="paid" if intent["status"] == "succeeded" else "unpaid")
        sb.emit("checkout.session.completed", session)
    return session


def settle(sb, intent_id, outcome):
    """A processing bank debit clears or fails; returns the PaymentIntent."""
    _check_outcome(outcome, SETTLEMENTS)
    intent = sb.store.get("payment_intent", intent_id)
    if intent["status"] != "processing":
        raise invalid_state(f"This PaymentIntent is {intent['status']}; only processing payments can be settled.",
                            code="payment_intent_unexpected_state")
    charge = sb.store.get("charge", intent["latest_charge"])
    if outcome == "succeeded":
        _succeed(sb, intent, charge)
    else:
        _fail(sb, intent, charge, "bank_debit")
    kind, object_id = sb.intent_purpose.get(intent_id, (None, None))
    if kind == "invoice":
        _after_invoice_attempt(sb, sb.store.get("invoice", object_id), intent)
    elif kind == "checkout.session":
        session = sb.store.get("checkout.session", object_id)
        if outcome == "succeeded":
            previous = apply_changes(session, {"payment_status": "paid"})
            sb.emit("checkout.session.async_payment_succeeded", session, previous)
        else:
            sb.emit("checkout.session.async_payment_failed", session)
    return intent


# ---------------------------------------------------------------- refunds and disputes


def _refundable_charge(sb, params):
    if "charge" in params:
        return sb.store.get("charge", params["charge"], param="charge")
    if "payment_intent" in params:
        intent = sb.store.get("payment_intent", params["payment_intent"], param="payment_intent")
        if intent["latest_charge"] is None:
            raise invalid_state(f"PaymentIntent {intent['id']} has no charge to refund.", param="payment_intent")
        return sb.store.get("charge", intent["latest_charge"])
    raise parameter_missing("charge")


def create_refund(sb, params):
    """POST /v1/refunds"""
    charge = _refundable_charge(sb, params)
    if charge["status"] != "succeeded":
        raise invalid_state(f"Charge {charge['id']} has not succeeded and cannot be refunded.",
                            code="charge_not_refundable")
    remaining = charge["amount"] - charge["amount_refunded"]
    if remaining == 0:
        raise invalid_state(f"Charge {charge['id']} has already been refunded.", code="charge_already_refunded")
    amount = params.get("amount", remaining)
    if amount <= 0:
        raise StripeError("Refund amount must be positive.", param="amount")
    if amount > remaining:
        raise StripeError(
            f"Refund amount ({format_amount(amount, charge['currency'])}) is greater than unrefunded amount on "
            f"charge ({format_amount(remaining, charge['currency'])})",
            code="amount_too_large", param="amount",
        )
    refund = shaped(
        "refund",
        id=new_id("refund"),
        amount=amount,
        charge=charge["id"],
        created=sb.clock.now(),
        currency=charge["currency"],
        metadata=params.get("metadata") or {},
        payment_intent=charge["payment_intent"],
        reason=params.get("reason"),
        status="succeeded",
    )
    sb.store.add(refund)
    previous = apply_changes(charge, {
        "amount_refunded": charge["amount_refunded"] + amount,
        "refunded": charge["amount_refunded"] + amount == charge["amount"],
    })
    charge["refunds"]["data"].insert(0, copy.deepcopy(refund))
    sb.credit(charge["currency"], -amount)
    sb.emit("refund.created", refund)
    sb.emit("charge.refunded", charge, previous)
    return refund


def retrieve_refund(sb, params, id):
    """GET /v1/refunds/:id"""
    return sb.store.get("refund", id)


def list_refunds(sb, params):
    """GET /v1/refunds"""
    return list_matching(sb.store.newest_first("refund"), params, "/v1/refunds", {
        "charge": lambda refund: refund["charge"],
        "payment_intent": lambda refund: refund["payment_intent"],
    })


def dispute_charge(sb, charge_id, reason):
    """The customer disputes a charge with their bank; returns the dispute."""
    charge = sb.store.get("charge", charge_id)
    if charge["status"] != "succeeded":
        raise invalid_state(f"Charge {charge_id} has not succeeded and cannot be disputed.")
    if charge["disputed"]:
        raise invalid_state(f"Charge {charge_id} is already disputed.", code="charge_disputed")
    now = sb.clock.now()
    dispute = shaped(
        "dispute",
        id=new_id("dispute"),
        amount=charge["amount"],
        balance_transactions=[],
        charge=charge_id,
        created=now,
        currency=charge["currency"],
        payment_intent=charge["payment_intent"],
        payment_method_details={"card": {"brand": "visa", "case_type": "chargeback", "network_reason_code": "10.4"},
                                "type": "card"},
        reason=reason,
        status="needs_response",
    )
    dispute["evidence_details"].update(due_by=now + 7 * DAY_SECONDS, has_evidence=False, past_due=False,
                                       submission_count=0)
    sb.store.add(dispute)
    charge["disputed"] = True
    # The disputed amount leaves the platform balance at once, as with a real chargeback.
    sb.credit(charge["currency"], -charge["amount"])
    sb.emit("charge.dispute.created", dispute)
    return dispute


DISPUTE_OUTCOMES = ("won", "lost", "warning_closed")


def close_dispute(sb, dispute_id, outcome):
    """The bank decides a dispute; returns it. Won: the disputed amount comes back (funds_reinstated)."""
    if outcome not in DISPUTE_OUTCOMES:
        raise StripeError(f"Invalid outcome: must be one of {', '.join(DISPUTE_OUTCOMES)}", param="outcome")
    dispute = sb.store.get("dispute", dispute_id)
    if dispute["status"] in DISPUTE_OUTCOMES:
        raise invalid_state(f"Dispute {dispute_id} is already closed ({dispute['status']}).")
    previous = {"status": dispute["status"]}
    dispute["status"] = outcome
    dispute["is_charge_refundable"] = False
    if outcome == "won":
        sb.credit(dispute["currency"], dispute["amount"])
        sb.emit("charge.dispute.funds_reinstated", dispute)
    sb.emit("charge.dispute.closed", dispute, previous)
    return dispute


def retrieve_dispute(sb, params, id):
    """GET /v1/disputes/:id"""
    return sb.store.get("dispute", id)


def list_disputes(sb, params):
    """GET /v1/disputes"""
    return list_matching(sb.store.newest_first("dispute"), params, "/v1/disputes", {
        "charge": lambda dispute: dispute["charge"],
        "payment_intent": lambda dispute: dispute["payment_intent"],
    })
