"""The `/v1/` API: authentication, parameter checks, idempotency, expansion, and the route table."""

import base64
import binascii
import copy
import json
from dataclasses import dataclass
from urllib.parse import parse_qsl

import stripe
from flask import Blueprint, Response, current_app, request

from stripe_sandbox import billing, connect, payments, webhooks
from stripe_sandbox.errors import StripeError
from stripe_sandbox.params import check_params, decode_pairs, params_class
from stripe_sandbox.sandbox import current_request
from stripe_sandbox.shapes import list_object
from stripe_sandbox.state import random_token

bp = Blueprint("api", __name__)

MAX_IDEMPOTENCY_KEY_LENGTH = 255


@dataclass(frozen=True)
class Route:
    method: str
    rule: str
    params: str  # the SDK's parameter class, e.g. "InvoiceCreateParams" or "checkout.SessionListParams"
    operation: object


ROUTES = [
    Route("POST", "/v1/customers", "CustomerCreateParams", billing.create_customer),
    Route("GET", "/v1/customers", "CustomerListParams", billing.list_customers),
    Route("GET", "/v1/customers/<id>", "CustomerRetrieveParams", billing.retrieve_customer),
    Route("POST", "/v1/customers/<id>", "CustomerUpdateParams", billing.update_customer),
    Route("POST", "/v1/products", "ProductCreateParams", billing.create_product),
    Route("GET", "/v1/products", "ProductListParams", billing.list_products),
    Route("GET", "/v1/products/<id>", "ProductRetrieveParams", billing.retrieve_product),
    Route("POST", "/v1/prices", "PriceCreateParams", billing.create_price),
    Route("GET", "/v1/prices", "PriceListParams", billing.list_prices),
    Route("GET", "/v1/prices/<id>", "PriceRetrieveParams", billing.retrieve_price),
    Route("POST", "/v1/tax_rates", "TaxRateCreateParams", billing.create_tax_rate),
    Route("GET", "/v1/tax_rates", "TaxRateListParams", billing.list_tax_rates),
    Route("GET", "/v1/tax_rates/<id>", "TaxRateRetrieveParams", billing.retrieve_tax_rate),
    Route("POST", "/v1/invoiceitems", "InvoiceItemCreateParams", billing.create_invoice_item),
    Route("GET", "/v1/invoiceitems", "InvoiceItemListParams", billing.list_invoice_items),
    Route("GET", "/v1/invoiceitems/<id>", "InvoiceItemRetrieveParams", billing.retrieve_invoice_item),
    Route("DELETE", "/v1/invoiceitems/<id>", "InvoiceItemDeleteParams", billing.delete_invoice_item),
    Route("POST", "/v1/invoices", "InvoiceCreateParams", billing.create_invoice),
    Route("GET", "/v1/invoices", "InvoiceListParams", billing.list_invoices),
    Route("GET", "/v1/invoices/<id>", "InvoiceRetrieveParams", billing.retrieve_invoice),
    Route("POST", "/v1/invoices/<id>", "InvoiceUpdateParams", billing.update_invoice),
    Route("DELETE", "/v1/invoices/<id>", "InvoiceDeleteParams", billing.delete_invoice),
    Route("GET", "/v1/invoices/<id>/lines", "InvoiceListLinesParams", billing.list_invoice_lines),
    Route("POST", "/v1/invoices/<id>/finalize", "InvoiceFinalizeInvoiceParams", billing.finalize_invoice),
    Route("POST", "/v1/invoices/<id>/send", "InvoiceSendInvoiceParams", billing.send_invoice),
    Route("POST", "/v1/invoices/<id>/pay", "InvoicePayParams", billing.pay_invoice),
    Route("POST", "/v1/invoices/<id>/void", "InvoiceVoidInvoiceParams", billing.void_invoice),
    Route("POST", "/v1/invoices/<id>/mark_uncollectible", "InvoiceMarkUncollectibleParams",
          billing.mark_uncollectible),
    Route("GET", "/v1/invoice_payments", "InvoicePaymentListParams", billing.list_invoice_payments),
    Route("GET", "/v1/invoice_payments/<id>", "InvoicePaymentRetrieveParams", billing.retrieve_invoice_payment),
    Route("POST", "/v1/payment_links", "PaymentLinkCreateParams", payments.create_payment_link),
    Route("GET", "/v1/payment_links", "PaymentLinkListParams", payments.list_payment_links),
    Route("GET", "/v1/payment_links/<id>", "PaymentLinkRetrieveParams", payments.retrieve_payment_link),
    Route("POST", "/v1/payment_links/<id>", "PaymentLinkUpdateParams", payments.update_payment_link),
    Route("GET", "/v1/payment_links/<id>/line_items", "PaymentLinkListLineItemsParams",
          payments.list_payment_link_items),
    Route("GET", "/v1/checkout/sessions", "checkout.SessionListParams", payments.list_sessions),
    Route("GET", "/v1/checkout/sessions/<id>", "checkout.SessionRetrieveParams", payments.retrieve_session),
    Route("GET", "/v1/checkout/sessions/<id>/line_items", "checkout.SessionListLineItemsParams",
          payments.list_session_items),
    Route("GET", "/v1/payment_intents", "PaymentIntentListParams", payments.list_payment_intents),
    Route("GET", "/v1/payment_intents/<id>", "PaymentIntentRetrieveParams", payments.retrieve_payment_intent),
    Route("GET", "/v1/charges", "ChargeListParams", payments.list_charges),
    Route("GET", "/v1/charges/<id>", "ChargeRetrieveParams", payments.retrieve_charge),
    Route("POST", "/v1/refunds", "RefundCreateParams", payments.create_refund),
    Route("GET", "/v1/refunds", "RefundListParams", payments.list_refunds),
    Route("GET", "/v1/refunds/<id>", "RefundRetrieveParams", payments.retrieve_refund),
    Route("GET", "/v1/disputes", "DisputeListParams", payments.list_disputes),
    Route("GET", "/v1/disputes/<id>", "DisputeRetrieveParams", payments.retrieve_dispute),
    Route("POST", "/v1/accounts", "AccountCreateParams", connect.create_account),
    Route("GET", "/v1/accounts", "AccountListParams", connect.list_accounts),
    Route("GET", "/v1/accounts/<id>", "AccountRetrieveParams", connect.retrieve_account),
    Route("POST", "/v1/accounts/<id>", "AccountUpdateParams", connect.update_account),
    Route("POST", "/v1/account_links", "AccountLinkCreateParams", connect.create_account_link),
    Route("GET", "/v1/balance", "BalanceRetrieveParams", connect.retrieve_balance),
    Route("POST", "/v1/transfers", "TransferCreateParams", connect.create_transfer),
    Route("GET", "/v1/transfers", "TransferListParams", connect.list_transfers),
    Route("GET", "/v1/transfers/<id>", "TransferRetrieveParams", connect.retrieve_transfer),
    Route("POST", "/v1/transfers/<id>/reversals", "TransferReversalCreateParams", connect.create_reversal),
    Route("GET", "/v1/transfers/<id>/reversals", "TransferReversalListParams", connect.list_reversals),
    Route("POST", "/v1/webhook_endpoints", "WebhookEndpointCreateParams", webhooks.create_webhook_endpoint),
    Route("GET", "/v1/webhook_endpoints", "WebhookEndpointListParams", webhooks.list_webhook_endpoints),
    Route("GET", "/v1/webhook_endpoints/<id>", "WebhookEndpointRetrieveParams", webhooks.retrieve_webhook_endpoint),
    Route("POST", "/v1/webhook_endpoints/<id>", "WebhookEndpointUpdateParams", webhooks.update_webhook_endpoint),
    Route("DELETE", "/v1/webhook_endpoints/<id>", "WebhookEndpointDeleteParams", webhooks.delete_webhook_endpoint),
    Route("GET", "/v1/events", "EventListParams", webhooks.list_events),
    Route("GET", "/v1/events/<id>", "EventRetrieveParams", webhooks.retrieve_event),
]


def _serve(route, **path_args):
    sandbox = current_app.extensions["stripe_sandbox"]
    request_id = f"req_{random_token(14)}"
    idempotency_key = request.headers.get("Idempotency-Key") if route.method == "POST" else None
    replayed = False
    try:
        api_key = authenticate(request.headers.get("Authorization", ""))
        pairs = parse_qsl(request.query_string.decode(), keep_blank_values=True)
        if route.method == "POST":
            pairs += parse_qsl(request.get_data(as_text=True), keep_blank_values=True)
        decoded = decode_pairs(pairs)
        params = check_params(params_class(route.params), decoded)
        if idempotency_key is not None and len(idempotency_key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            raise StripeError(f"Idempotency-Key must be at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters.",
                              type="idempotency_error")
        fingerprint = json.dumps([route.method, request.path, decoded], sort_keys=True)
        # One lock around the whole request serialises requests that share an idempotency key: the second
        # waits, then replays the first's response instead of getting Stripe's 409 for a key in use.
        with sandbox.lock:
            stored = None
            if idempotency_key is not None:
                stored = sandbox.idempotency.replay(api_key, idempotency_key, fingerprint)
            if stored is not None:
                status, body, request_id, replayed = stored.status, stored.body, stored.request_id, True
            else:
                status, body = _run(sandbox, route, params, path_args, request_id, idempotency_key)
                if idempotency_key is not None:
                    sandbox.idempotency.save(api_key, idempotency_key, fingerprint, status, body, request_id)
    except StripeError as error:
        status, body = error.status, error.body()
    response = json_response(body, status)
    response.headers["Request-Id"] = request_id
    response.headers["Stripe-Version"] = request.headers.get("Stripe-Version", stripe.api_version)
    if idempotency_key is not None:
        response.headers["Idempotency-Key"] = idempotency_key
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _run(sandbox, route, params, path_args, request_id, idempotency_key):
    token = current_request.set({"id": request_id, "idempotency_key": idempotency_key})
    try:
        result = route.operation(sandbox, params, **path_args)
        return 200, render(sandbox, result, params.get("expand", []))
    except StripeError as error:
        # Stripe keeps the result of any request that got as far as running, failures included.
        return error.status, error.body()
    finally:
        current_request.reset(token)


def authenticate(authorization):
    """The API key from a `Bearer` (or Basic, as curl -u sends it) Authorization header; 401 unless sk_test_."""
    scheme, _, credentials = authorization.partition(" ")
    key = credentials.strip()
    if scheme.lower() == "basic":
        try:
            key = base64.b64decode(key).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            key = ""
    elif scheme.lower() != "bearer":
        key = ""
    if not key:
        raise StripeError(
            "You did not provide an API key. You need to provide your API key in the Authorization header, using "
            "Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            status=401,
        )
    if not key.startswith("sk_test_"):
        masked = key[:8] + "*" * max(0, len(key) - 12) + key[-4:]
        raise StripeError(
            f"Invalid API Key provided: {masked}. The Stripe sandbox accepts only test-mode secret keys (sk_test_…).",
            status=401,
        )
    return key


def json_response(body, status=200):
    """JSON the way Stripe writes it."""
    return Response(json.dumps(body, indent=2), status=status, mimetype="application/json")


# ---------------------------------------------------------------- expansion


def _virtual_fields(obj):
    """Fields Stripe only includes when expanded."""
    if obj.get("object") == "payment_link":
        return {"line_items": f"/v1/payment_links/{obj['id']}/line_items"}
    if obj.get("object") == "checkout.session":
        return {"line_items": f"/v1/checkout/sessions/{obj['id']}/line_items"}
    return {}


def render(sandbox, result, expand):
    """A deep copy of a stored object or list, with `expand` paths replaced by the objects they name."""
    rendered = copy.deepcopy(result)
    for index, path in enumerate(expand):
        _expand(sandbox, rendered, path.split("."), path, f"expand[{index}]")
    return rendered


def _expand(sandbox, node, parts, path, param):
    if not parts or node is None:
        return
    head, rest = parts[0], parts[1:]
    if not isinstance(node, dict):
        raise StripeError(f"This property cannot be expanded ({path}).", param=param)
    virtual = _virtual_fields(node)
    if head in virtual and head not in node:
        node[head] = list_object(copy.deepcopy(sandbox.line_items.get(node["id"], [])), virtual[head])
    if head not in node:
        raise StripeError(f"This property cannot be expanded ({path}).", param=param)
    value = node[head]
    if isinstance(value, str):
        found = sandbox.store.find(value)
        if found is None:
            raise StripeError(f"This property cannot be expanded ({path}).", param=param)
        value = node[head] = copy.deepcopy(found)
    if isinstance(value, list):
        for item in value:
            _expand(sandbox, item, rest, path, param)
    else:
        _expand(sandbox, value, rest, path, param)


# ---------------------------------------------------------------- registration


def _register():
    for route in ROUTES:
        def view(route=route, **path_args):
            return _serve(route, **path_args)
        bp.add_url_rule(route.rule, endpoint=f"{route.method} {route.rule}", view_func=view,
                        methods=[route.method])


_register()


def unrecognized_url():
    """Stripe's answer to a path or method it does not serve."""
    return json_response({"error": {
        "type": "invalid_request_error",
        "message": f"Unrecognized request URL ({request.method}: {request.path}). "
                   "stripe-sandbox serves the subset of Stripe's API listed in stripe_sandbox/README.md.",
    }}, 404)
