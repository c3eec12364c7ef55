"""Test controls under `/_sandbox/`: JSON in and out, no API key, loopback callers only."""

import ipaddress
import json

from flask import Blueprint, current_app, request

from stripe_sandbox import billing, connect, payments
from stripe_sandbox.api import json_response, render
from stripe_sandbox.delivery import Chaos
from stripe_sandbox.errors import StripeError
from stripe_sandbox.shapes import list_object
from stripe_sandbox.state import KIND_BY_PREFIX

bp = Blueprint("controls", __name__, url_prefix="/_sandbox")

# The names tests may use for `/_sandbox/objects/<kind>`: Stripe's object names, plus the API's plural paths.
KIND_ALIASES = {
    "accounts": "account", "charges": "charge", "checkout_sessions": "checkout.session",
    "checkout.sessions": "checkout.session", "customers": "customer", "disputes": "dispute",
    "invoiceitems": "invoiceitem", "invoice_items": "invoiceitem", "invoice_item": "invoiceitem",
    "invoices": "invoice", "invoice_payments": "invoice_payment", "payment_intents": "payment_intent",
    "payment_links": "payment_link", "prices": "price", "products": "product", "refunds": "refund",
    "tax_rates": "tax_rate", "transfers": "transfer", "transfer_reversals": "transfer_reversal",
    "webhook_endpoints": "webhook_endpoint",
}
KNOWN_KINDS = set(KIND_BY_PREFIX.values())


def _sandbox():
    return current_app.extensions["stripe_sandbox"]


@bp.before_request
def loopback_only():
    if not ipaddress.ip_address(request.remote_addr or "0.0.0.0").is_loopback:
        return json_response({"error": {"type": "invalid_request_error",
                                        "message": "Sandbox controls answer loopback callers only."}}, 403)
    return None


@bp.errorhandler(StripeError)
def stripe_error(error):
    return json_response(error.body(), error.status)


def _body():
    raw = request.get_data()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise StripeError("The request body must be JSON.") from None
    if not isinstance(body, dict):
        raise StripeError("The request body must be a JSON object.")
    return body


def _number(body, name, default=None, *, minimum=0, kind=(int, float)):
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, kind) or value < minimum:
        raise StripeError(f"{name} must be a number of at least {minimum}", param=name)
    return value


# ---------------------------------------------------------------- customers paying


@bp.post("/invoices/<invoice_id>/pay")
def pay_invoice(invoice_id):
    sb = _sandbox()
    with sb.lock:
        return json_response(render(sb, payments.pay_invoice(sb, invoice_id, _body().get("outcome", "card")), []))


@bp.post("/payment_links/<link_id>/pay")
def pay_payment_link(link_id):
    sb = _sandbox()
    body = _body()
    details = body.get("customer_details") or {}
    with sb.lock:
        session = payments.pay_payment_link(sb, link_id, body.get("outcome", "card"), details)
        return json_response(render(sb, session, []))


@bp.post("/payment_intents/<intent_id>/settle")
def settle_payment_intent(intent_id):
    sb = _sandbox()
    with sb.lock:
        return json_response(render(sb, payments.settle(sb, intent_id, _body().get("outcome", "succeeded")), []))


@bp.post("/charges/<charge_id>/dispute")
def dispute_charge(charge_id):
    sb = _sandbox()
    with sb.lock:
        dispute = payments.dispute_charge(sb, charge_id, str(_body().get("reason", "fraudulent")))
        return json_response(render(sb, dispute, []))


@bp.post("/disputes/<dispute_id>/close")
def close_dispute(dispute_id):
    """The bank's decision: {"outcome": "won" | "lost" | "warning_closed"}."""
    sb = _sandbox()
    with sb.lock:
        dispute = payments.close_dispute(sb, dispute_id, str(_body().get("outcome", "won")))
        return json_response(render(sb, dispute, []))


@bp.post("/accounts/<account_id>/onboard")
def onboard_account(account_id):
    """The partner completes onboarding, as the hosted page's button does (for scripts and the demo)."""
    sb = _sandbox()
    with sb.lock:
        return json_response(render(sb, connect.complete_onboarding(sb, account_id), []))


# ---------------------------------------------------------------- clock and balance


@bp.get("/clock")
def clock():
    sb = _sandbox()
    with sb.lock:
        return json_response(sb.clock.describe())


@bp.post("/clock/advance")
def advance_clock():
    sb = _sandbox()
    seconds = _number(_body(), "seconds", kind=int)
    with sb.lock:
        sb.clock.advance(seconds)
        billing.report_overdue(sb)
        return json_response(sb.clock.describe())


@bp.post("/balance")
def set_balance():
    sb = _sandbox()
    body = _body()
    available = _number(body, "available", kind=int, minimum=-(10**12))
    with sb.lock:
        return json_response(connect.set_available_balance(sb, str(body.get("currency", "usd")), available))


# ---------------------------------------------------------------- webhook deliveries


@bp.get("/webhook_endpoints")
def webhook_endpoints():
    """Every endpoint with its signing secret, which the API shows only once."""
    sb = _sandbox()
    with sb.lock:
        endpoints = [dict(endpoint, secret=sb.endpoint_secrets[endpoint["id"]],
                          chaos=sb.deliverer.chaos.get(endpoint["id"], Chaos()).describe())
                     for endpoint in sb.store.newest_first("webhook_endpoint")]
        return json_response(list_object(endpoints, "/_sandbox/webhook_endpoints"))


def _chaos_from(body):
    drop = body.get("drop", False)
    drop_types = body.get("drop_types", [])
    if not isinstance(drop, bool):
        raise StripeError("drop must be true or false", param="drop")
    if not isinstance(drop_types, list) or not all(isinstance(name, str) for name in drop_types):
        raise StripeError("drop_types must be a list of event types", param="drop_types")
    return Chaos(
        duplicate=_number(body, "duplicate", 1, minimum=1, kind=int),
        shuffle_window=_number(body, "shuffle_window", 0, kind=int),
        delay_seconds=_number(body, "delay_seconds", 0),
        drop=drop,
        drop_types=frozenset(drop_types),
    )


@bp.post("/webhook_endpoints/<endpoint_id>/chaos")
def set_chaos(endpoint_id):
    sb = _sandbox()
    chaos = _chaos_from(_body())
    with sb.lock:
        sb.store.get("webhook_endpoint", endpoint_id)
        sb.deliverer.set_chaos(endpoint_id, chaos)
        return json_response(dict(chaos.describe(), endpoint=endpoint_id))


@bp.get("/webhook_endpoints/<endpoint_id>/chaos")
def get_chaos(endpoint_id):
    sb = _sandbox()
    with sb.lock:
        sb.store.get("webhook_endpoint", endpoint_id)
        return json_response(dict(sb.deliverer.chaos.get(endpoint_id, Chaos()).describe(), endpoint=endpoint_id))


@bp.delete("/webhook_endpoints/<endpoint_id>/chaos")
def clear_chaos(endpoint_id):
    sb = _sandbox()
    with sb.lock:
        sb.store.get("webhook_endpoint", endpoint_id)
        sb.deliverer.clear_chaos(endpoint_id)
        return json_response(dict(Chaos().describe(), endpoint=endpoint_id))


@bp.get("/deliveries")
def deliveries():
    sb = _sandbox()
    filters = {name: request.args[name] for name in ("event", "endpoint", "type", "outcome") if name in request.args}
    with sb.lock:
        attempts = [attempt for attempt in sb.deliverer.log
                    if all(attempt[name] == value for name, value in filters.items())]
        return json_response(list_object(attempts, "/_sandbox/deliveries"))


@bp.post("/deliveries/drain")
def drain_deliveries():
    """Block until no delivery is queued or in flight (scheduled retries included), or until the timeout."""
    sb = _sandbox()
    timeout = _number(_body(), "timeout", 10)
    drained, outstanding = sb.deliverer.drain(timeout)
    return json_response({"drained": drained, "outstanding": outstanding})


# ---------------------------------------------------------------- faults


@bp.post("/faults")
def arm_fault():
    return json_response(_sandbox().faults.arm(_body()).describe())


@bp.get("/faults")
def list_faults():
    return json_response(list_object(_sandbox().faults.describe(), "/_sandbox/faults"))


@bp.delete("/faults")
def clear_faults():
    _sandbox().faults.clear()
    return json_response(list_object([], "/_sandbox/faults"))


# ---------------------------------------------------------------- whole sandbox


@bp.post("/flush")
def flush():
    sb = _sandbox()
    with sb.lock:
        sb.flush()
        return json_response({"flushed": True, "kept_webhook_endpoints": [e.id for e in sb.startup_endpoints]})


@bp.get("/objects/<kind>")
def objects(kind):
    """Everything of one kind, newest first, for tests that compare their records with the sandbox's."""
    sb = _sandbox()
    kind = KIND_ALIASES.get(kind, kind)
    if kind not in KNOWN_KINDS:
        raise StripeError(f"Unknown kind {kind!r}; use one of {', '.join(sorted(KNOWN_KINDS))}.", param="kind")
    with sb.lock:
        if kind == "event":
            found = sb.events.newest_first()
        else:
            found = sb.store.newest_first(kind)
        return json_response(render(sb, list_object(found, f"/_sandbox/objects/{kind}"), []))


@bp.get("/health")
def health():
    sb = _sandbox()
    with sb.lock:
        return json_response({"status": "ok", "now": sb.clock.now(), "public_url": sb.public_url})
