"""Every Stripe call Closeout makes, through the official SDK.

Writes carry idempotency keys derived from our own ids; the same intent is also backed
by a database constraint, because Stripe forgets keys after 24 hours
(https://docs.stripe.com/api/idempotent_requests).
"""
import stripe
from flask import current_app


class StripeUnavailable(Exception):
    """A transient failure (5xx, 429, timeout, connection): retry later."""


class StripeRefused(Exception):
    """A permanent failure (4xx such as a bad email or a missing object): a person must look."""


def client():
    """A StripeClient for the configured account; STRIPE_API_BASE points it at the sandbox."""
    app = current_app._get_current_object()
    cached = app.extensions.get("closeout_stripe")
    if cached is None:
        api_key = app.config.get("STRIPE_SECRET_KEY")
        if not api_key:
            raise StripeRefused("STRIPE_SECRET_KEY is not configured")
        base = app.config.get("STRIPE_API_BASE")
        cached = stripe.StripeClient(
            api_key,
            base_addresses={"api": base} if base else None,
            max_network_retries=0,  # RQ's retries with backoff own the retrying
            http_client=stripe.RequestsClient(timeout=app.config["STRIPE_TIMEOUT_SECONDS"]),
        )
        app.extensions["closeout_stripe"] = cached
    return cached


def call(operation, *args, **kwargs):
    """Run one SDK call, sorting its failures into retry-later and needs-a-person."""
    try:
        return operation(*args, **kwargs)
    except (stripe.APIConnectionError, stripe.RateLimitError) as error:
        raise StripeUnavailable(f"Stripe unreachable: {error.user_message or error}") from error
    except stripe.APIError as error:
        raise StripeUnavailable(f"Stripe error {error.http_status}: {error.user_message or error}") from error
    except stripe.StripeError as error:
        if error.http_status is not None and error.http_status >= 500:
            raise StripeUnavailable(f"Stripe error {error.http_status}: {error.user_message or error}") from error
        if error.http_status == 409:  # an idempotent request still in flight at Stripe
            raise StripeUnavailable(f"Stripe conflict: {error.user_message or error}") from error
        raise StripeRefused(f"Stripe refused: {error.user_message or error}") from error


def _write(key):
    return {"idempotency_key": key}


def metadata_of(stripe_object):
    """A Stripe object's metadata as a plain dict (StripeObject is not a dict)."""
    return stripe_object.metadata.to_dict() if stripe_object.metadata else {}


# --- Customers ------------------------------------------------------------------------------------

def create_customer(*, name, email, phone, metadata, key):
    params = {"name": name, "metadata": metadata}
    if email:
        params["email"] = email
    if phone:
        params["phone"] = phone
    return call(client().v1.customers.create, params=params, options=_write(key))


def update_customer(customer_id, *, name, email, phone, key):
    params = {"name": name, "email": email or "", "phone": phone or ""}
    return call(client().v1.customers.update, customer_id, params=params, options=_write(key))


def retrieve_customer(customer_id):
    return call(client().v1.customers.retrieve, customer_id)


# --- Tax rates ------------------------------------------------------------------------------------

def create_tax_rate(*, percentage, key):
    params = {"display_name": "Sales tax", "percentage": str(percentage), "inclusive": False,
              "metadata": {"closeout": "business-rate"}}
    return call(client().v1.tax_rates.create, params=params, options=_write(key))


# --- Invoices -------------------------------------------------------------------------------------

def create_invoice(*, customer_id, currency, days_until_due, description, footer, metadata, key):
    params = {
        "customer": customer_id,
        "currency": currency,
        "collection_method": "send_invoice",
        "days_until_due": days_until_due,
        "auto_advance": False,  # Closeout decides when to finalize (draft review policy)
        "pending_invoice_items_behavior": "exclude",
        "description": description[:1500],
        "footer": footer[:5000],
        "metadata": metadata,
    }
    return call(client().v1.invoices.create, params=params, options=_write(key))


def find_invoice(customer_id, metadata_key, metadata_value):
    """Our invoice for this intent, if Stripe has it: the fallback once idempotency keys expired."""
    invoices = call(client().v1.invoices.list, params={"customer": customer_id, "limit": 100})
    for invoice in invoices.auto_paging_iter():
        if metadata_of(invoice).get(metadata_key) == metadata_value:
            return invoice
    return None


def add_invoice_item(*, customer_id, invoice_id, currency, description, quantity, unit_amount, amount,
                     tax_rate_id, metadata, key):
    params = {"customer": customer_id, "invoice": invoice_id, "currency": currency,
              "description": description[:500], "metadata": metadata}
    if amount is not None:
        params["amount"] = amount
    else:
        params["quantity"] = quantity
        params["unit_amount_decimal"] = str(unit_amount)
    if tax_rate_id:
        params["tax_rates"] = [tax_rate_id]
    return call(client().v1.invoice_items.create, params=params, options=_write(key))


def list_invoice_items(invoice_id):
    items = call(client().v1.invoice_items.list, params={"invoice": invoice_id, "limit": 100})
    return list(items.auto_paging_iter())


def retrieve_invoice(invoice_id):
    return call(client().v1.invoices.retrieve, invoice_id)


def finalize_invoice(invoice_id, *, key):
    return call(client().v1.invoices.finalize_invoice, invoice_id, params={"auto_advance": False}, options=_write(key))


def send_invoice(invoice_id, *, key):
    return call(client().v1.invoices.send_invoice, invoice_id, options=_write(key))


def void_invoice(invoice_id, *, key):
    return call(client().v1.invoices.void_invoice, invoice_id, options=_write(key))


def delete_draft_invoice(invoice_id):
    return call(client().v1.invoices.delete, invoice_id)


def pay_invoice_out_of_band(invoice_id, *, key):
    return call(client().v1.invoices.pay, invoice_id, params={"paid_out_of_band": True}, options=_write(key))


# --- Payment links --------------------------------------------------------------------------------

def create_payment_link(*, currency, lines, metadata, confirmation_message, key):
    """lines: (name, unit_amount) pairs, quantity 1 each; Stripe allows at most 20."""
    params = {
        "line_items": [
            {"price_data": {"currency": currency, "unit_amount": amount, "product_data": {"name": name[:250]}},
             "quantity": 1}
            for name, amount in lines
        ],
        "metadata": metadata,
        "payment_intent_data": {"metadata": metadata},
        "after_completion": {"type": "hosted_confirmation",
                             "hosted_confirmation": {"custom_message": confirmation_message[:500]}},
    }
    return call(client().v1.payment_links.create, params=params, options=_write(key))


def retrieve_payment_link(link_id):
    return call(client().v1.payment_links.retrieve, link_id)


def deactivate_payment_link(link_id, *, key):
    return call(client().v1.payment_links.update, link_id, params={"active": False}, options=_write(key))


def find_payment_link(metadata_key, metadata_value):
    """Our payment link for this intent, if Stripe has it (after idempotency keys expired)."""
    links = call(client().v1.payment_links.list, params={"limit": 100})
    for link in links.auto_paging_iter():
        if metadata_of(link).get(metadata_key) == metadata_value:
            return link
    return None


# --- Payment sync (portal/payments): reads for reconciling, and the webhook endpoint -------------

def list_events(*, created_after=None, types=None, delivery_success=None):
    """Stripe's events, newest first, as an iterator over every page."""
    params = {"limit": 100}
    if created_after is not None:
        params["created"] = {"gt": created_after}
    if types:
        params["types"] = list(types)
    if delivery_success is not None:
        params["delivery_success"] = delivery_success
    return call(client().v1.events.list, params=params).auto_paging_iter()


def invoice_for_payment_intent(payment_intent_id):
    """The invoice a PaymentIntent pays, via its invoice payment; None for a payment-link payment."""
    payments = call(client().v1.invoice_payments.list,
                    params={"payment": {"type": "payment_intent", "payment_intent": payment_intent_id}, "limit": 1})
    return payments.data[0].invoice if payments.data else None


def retrieve_payment_intent(payment_intent_id):
    return call(client().v1.payment_intents.retrieve, payment_intent_id)


def retrieve_charge(charge_id):
    return call(client().v1.charges.retrieve, charge_id)


def checkout_sessions_for_link(link_id):
    """Every checkout session of a payment link, newest first: the link's payments."""
    sessions = call(client().v1.checkout.sessions.list, params={"payment_link": link_id, "limit": 100})
    return list(sessions.auto_paging_iter())


def list_webhook_endpoints():
    return list(call(client().v1.webhook_endpoints.list, params={"limit": 100}).auto_paging_iter())


def create_webhook_endpoint(*, url, enabled_events, key, connect=False, metadata=None):
    """An account endpoint, or with `connect` one for events on connected accounts (the partners')."""
    params = {"url": url, "enabled_events": list(enabled_events), "description": "Closeout payment sync",
              "metadata": metadata or {}}
    if connect:
        params["connect"] = True
    return call(client().v1.webhook_endpoints.create, params=params, options=_write(key))


def update_webhook_endpoint(endpoint_id, *, enabled_events, key, metadata=None):
    params = {"enabled_events": list(enabled_events)}
    if metadata:
        params["metadata"] = metadata
    return call(client().v1.webhook_endpoints.update, endpoint_id, params=params, options=_write(key))


def latest_payment_intent_for_invoice(invoice_id):
    """The PaymentIntent of an invoice's newest payment attempt, or None before any attempt."""
    payments = call(client().v1.invoice_payments.list, params={"invoice": invoice_id, "limit": 1})
    if not payments.data:
        return None
    return retrieve_payment_intent(payments.data[0].payment.payment_intent)


# --- Connect: referral partners' accounts and their fees (portal/referrals) ---------------------

def create_connected_account(*, email, metadata, key):
    """An Express connected account; the partner finishes it through an Account Link."""
    params = {"type": "express", "metadata": metadata, "capabilities": {"transfers": {"requested": True}}}
    if email:
        params["email"] = email
    return call(client().v1.accounts.create, params=params, options=_write(key))


def retrieve_account(account_id):
    return call(client().v1.accounts.retrieve, account_id)


def create_account_link(account_id, *, refresh_url, return_url):
    """A short-lived onboarding URL for the partner (not idempotent at Stripe: each link is single-use)."""
    params = {"account": account_id, "refresh_url": refresh_url, "return_url": return_url,
              "type": "account_onboarding"}
    return call(client().v1.account_links.create, params=params)


class BalanceInsufficient(StripeUnavailable):
    """Not enough available funds for a transfer yet: retry later, under a new key (Stripe stored this answer)."""


def create_transfer(*, destination, amount, currency, source_transaction, transfer_group, metadata, key):
    """Send a fee to a connected account; `balance_insufficient` is worth retrying, so it counts as unavailable."""
    params = {"destination": destination, "amount": amount, "currency": currency,
              "transfer_group": transfer_group, "metadata": metadata}
    if source_transaction:
        params["source_transaction"] = source_transaction
    try:
        return call(client().v1.transfers.create, params=params, options=_write(key))
    except StripeRefused as error:
        # Funds not yet available (https://docs.stripe.com/connect/separate-charges-and-transfers): later, it may be.
        if getattr(error.__cause__, "code", None) == "balance_insufficient":
            raise BalanceInsufficient(f"Stripe balance insufficient: {error.__cause__.user_message}") from error.__cause__
        raise


def transfers_in_group(transfer_group):
    """Every transfer of a transfer group: the lookup once idempotency keys may have expired."""
    transfers = call(client().v1.transfers.list, params={"transfer_group": transfer_group, "limit": 100})
    return list(transfers.auto_paging_iter())


def retrieve_transfer(transfer_id):
    return call(client().v1.transfers.retrieve, transfer_id)


def create_transfer_reversal(transfer_id, *, amount, metadata, key):
    return call(client().v1.transfers.reversals.create, transfer_id, params={"amount": amount, "metadata": metadata},
                options=_write(key))


def charge_of_payment_intent(payment_intent_id):
    """The charge that paid a PaymentIntent (its latest), or None."""
    intent = retrieve_payment_intent(payment_intent_id)
    charge = intent.latest_charge
    return getattr(charge, "id", charge)


def charge_for_invoice(invoice_id):
    """The charge of an invoice's newest payment, or None (not paid yet, or paid out of band)."""
    payments = call(client().v1.invoice_payments.list, params={"invoice": invoice_id, "limit": 1})
    intent_id = payments.data[0].payment.payment_intent if payments.data else None
    if not intent_id:
        return None
    return charge_of_payment_intent(getattr(intent_id, "id", intent_id))
