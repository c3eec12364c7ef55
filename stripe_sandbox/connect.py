"""Connect: test connected accounts, the platform balance, transfers and their reversals."""

import copy

from stripe_sandbox.errors import StripeError, invalid_state, parameter_missing, resource_missing
from stripe_sandbox.listing import list_matching, paginate
from stripe_sandbox.money import format_amount
from stripe_sandbox.shapes import apply_changes, list_object, shaped, updated_metadata
from stripe_sandbox.state import new_id, random_token

INSUFFICIENT_FUNDS_MESSAGE = (
    "You have insufficient available funds in your Stripe account. Try adding funds directly to your available "
    "balance by creating Charges using the 4000000000000077 test card. See: "
    "https://stripe.com/docs/testing#available-balance"
)


# ---------------------------------------------------------------- accounts


def create_account(sb, params):
    """POST /v1/accounts — `express` and `standard` accounts wait for onboarding; `custom` ones start enabled."""
    account_id = new_id("account")
    account_type = params.get("type", "custom")
    onboarded = account_type == "custom"
    requested = params.get("capabilities") or {}
    capabilities = {name: "active" if onboarded else "inactive"
                    for name, wanted in requested.items() if wanted.get("requested")}
    account = shaped(
        "account",
        id=account_id,
        business_type=params.get("business_type"),
        capabilities=capabilities or {"card_payments": "active" if onboarded else "inactive",
                                      "transfers": "active" if onboarded else "inactive"},
        charges_enabled=onboarded,
        details_submitted=onboarded,
        payouts_enabled=onboarded,
        country=params.get("country", "US"),
        created=sb.clock.now(),
        default_currency=params.get("default_currency", "usd"),
        email=params.get("email"),
        external_accounts=list_object([], f"/v1/accounts/{account_id}/external_accounts"),
        metadata=params.get("metadata") or {},
        type=account_type,
    )
    if not onboarded:
        account["requirements"].update(currently_due=list(ONBOARDING_REQUIREMENTS),
                                       eventually_due=list(ONBOARDING_REQUIREMENTS),
                                       disabled_reason="requirements.past_due")
    account["business_profile"].update(params.get("business_profile", {}))
    sb.store.add(account)
    return account


# ---------------------------------------------------------------- onboarding (account links)

ONBOARDING_REQUIREMENTS = ("business_profile.url", "external_account", "tos_acceptance.date", "tos_acceptance.ip")
ACCOUNT_LINK_SECONDS = 300  # Stripe's account links expire after a few minutes


def create_account_link(sb, params):
    """POST /v1/account_links — a single-use URL to the sandbox's hosted onboarding page."""
    account = sb.store.get("account", params["account"], param="account")
    if params.get("type") not in ("account_onboarding", "account_update"):
        raise StripeError("Invalid type: must be one of account_onboarding or account_update", param="type")
    for name in ("refresh_url", "return_url"):
        if not params.get(name):
            raise parameter_missing(name)
    token = random_token(24)
    created = sb.clock.now()
    sb.onboarding_links[token] = {"account": account["id"], "return_url": params["return_url"],
                                  "refresh_url": params["refresh_url"], "expires_at": created + ACCOUNT_LINK_SECONDS,
                                  "used": False}
    return shaped("account_link", created=created, expires_at=created + ACCOUNT_LINK_SECONDS,
                  url=f"{sb.public_url}/connect/onboarding/{token}")


def complete_onboarding(sb, account_id):
    """The partner finished onboarding: details submitted, charges and payouts enabled, capabilities active."""
    account = sb.store.get("account", account_id, param="account")
    capabilities = {name: "active" for name in (account["capabilities"] or {"transfers": None})}
    requirements = dict(account["requirements"], currently_due=[], eventually_due=[], past_due=[],
                        disabled_reason=None)
    previous = apply_changes(account, {"capabilities": capabilities, "charges_enabled": True,
                                       "details_submitted": True, "payouts_enabled": True,
                                       "requirements": requirements})
    if previous:
        sb.emit("account.updated", account, previous)
    return account


def retrieve_account(sb, params, id):
    """GET /v1/accounts/:id"""
    return sb.store.get("account", id, param="account")


def update_account(sb, params, id):
    """POST /v1/accounts/:id — `email`, `metadata` and `business_profile`."""
    account = sb.store.get("account", id, param="account")
    changes = {}
    if "email" in params:
        changes["email"] = params["email"]
    if "metadata" in params:
        changes["metadata"] = updated_metadata(account["metadata"], params["metadata"])
    if "business_profile" in params:
        changes["business_profile"] = dict(account["business_profile"], **params["business_profile"])
    previous = apply_changes(account, changes)
    if previous:
        sb.emit("account.updated", account, previous)
    return account


def list_accounts(sb, params):
    """GET /v1/accounts"""
    return list_matching(sb.store.newest_first("account"), params, "/v1/accounts")


# ---------------------------------------------------------------- balance


def balance(sb):
    """The platform balance object, one entry per currency."""
    currencies = sorted(set(sb.balance) | {"usd"})
    return shaped(
        "balance",
        available=[{"amount": sb.available(currency), "currency": currency,
                    "source_types": {"card": sb.available(currency)}} for currency in currencies],
        connect_reserved=[{"amount": 0, "currency": currency} for currency in currencies],
        pending=[{"amount": 0, "currency": currency, "source_types": {"card": 0}} for currency in currencies],
    )


def retrieve_balance(sb, params):
    """GET /v1/balance"""
    return balance(sb)


# ---------------------------------------------------------------- transfers


def _transfers_from(sb, charge_id):
    return [transfer for transfer in sb.store.objects["transfer"].values()
            if transfer["source_transaction"] == charge_id]


def _check_funding(sb, amount, currency, source_transaction):
    if source_transaction is None:
        available = sb.available(currency)
        if available < amount:
            raise StripeError(INSUFFICIENT_FUNDS_MESSAGE, code="balance_insufficient")
        return
    charge = sb.store.get("charge", source_transaction, param="source_transaction")
    if charge["status"] != "succeeded":
        raise invalid_state(f"The source transaction {charge['id']} has not succeeded.", param="source_transaction")
    if charge["currency"] != currency:
        raise invalid_state(
            f"The currency of source_transaction's balance transaction ({charge['currency']}) must be the same as "
            f"the transfer currency ({currency})", param="currency",
        )
    already = sum(transfer["amount"] - transfer["amount_reversed"] for transfer in _transfers_from(sb, charge["id"]))
    remaining = charge["amount"] - charge["amount_refunded"] - already
    if amount > remaining:
        raise StripeError(
            f"Insufficient funds in the source transaction {charge['id']}: the transfer of "
            f"{format_amount(amount, currency)} exceeds the {format_amount(remaining, currency)} that remains of it "
            "after refunds and earlier transfers.",
            code="balance_insufficient", param="amount",
        )


def create_transfer(sb, params):
    """POST /v1/transfers"""
    destination = params["destination"]
    account = sb.store.find(destination)
    if account is None or not destination.startswith("acct_"):
        raise resource_missing("destination", destination, param="destination")
    if (account["capabilities"] or {}).get("transfers") != "active":
        raise StripeError(
            "Your destination account needs to have at least one of the following capabilities enabled: "
            "transfers, crypto_transfers, legacy_payments", code="insufficient_capabilities_for_transfer",
            param="destination")
    if "amount" not in params:
        raise parameter_missing("amount")
    amount, currency = params["amount"], params["currency"].lower()
    if amount <= 0:
        raise StripeError("This value must be greater than or equal to 1.", param="amount")
    source_transaction = params.get("source_transaction")
    _check_funding(sb, amount, currency, source_transaction)
    transfer_id = new_id("transfer")
    transfer = shaped(
        "transfer",
        id=transfer_id,
        amount=amount,
        amount_reversed=0,
        created=sb.clock.now(),
        currency=currency,
        description=params.get("description"),
        destination=destination,
        metadata=params.get("metadata") or {},
        reversals=list_object([], f"/v1/transfers/{transfer_id}/reversals"),
        reversed=False,
        source_transaction=source_transaction,
        source_type=params.get("source_type", "card"),
        transfer_group=params.get("transfer_group"),
    )
    sb.store.add(transfer)
    # A transfer funded by source_transaction still leaves the platform, but never waits on available funds.
    sb.credit(currency, -amount)
    sb.emit("transfer.created", transfer)
    return transfer


def retrieve_transfer(sb, params, id):
    """GET /v1/transfers/:id"""
    return sb.store.get("transfer", id)


def list_transfers(sb, params):
    """GET /v1/transfers"""
    return list_matching(sb.store.newest_first("transfer"), params, "/v1/transfers", {
        "destination": lambda transfer: transfer["destination"],
        "transfer_group": lambda transfer: transfer["transfer_group"],
    })


def create_reversal(sb, params, id):
    """POST /v1/transfers/:id/reversals"""
    transfer = sb.store.get("transfer", id)
    remaining = transfer["amount"] - transfer["amount_reversed"]
    if remaining == 0:
        raise invalid_state(f"Transfer {id} has already been fully reversed.")
    amount = params.get("amount", remaining)
    if amount <= 0 or amount > remaining:
        raise StripeError(
            f"Amount must be between 1 and {remaining}, what remains of the transfer after earlier reversals.",
            code="amount_too_large" if amount > remaining else None, param="amount",
        )
    reversal = shaped(
        "transfer_reversal",
        id=new_id("transfer_reversal"),
        amount=amount,
        created=sb.clock.now(),
        currency=transfer["currency"],
        metadata=params.get("metadata") or {},
        transfer=id,
    )
    sb.store.add(reversal)
    previous = apply_changes(transfer, {
        "amount_reversed": transfer["amount_reversed"] + amount,
        "reversed": transfer["amount_reversed"] + amount == transfer["amount"],
    })
    transfer["reversals"]["data"].insert(0, copy.deepcopy(reversal))
    sb.credit(transfer["currency"], amount)
    sb.emit("transfer.reversed", transfer, previous)
    return reversal


def list_reversals(sb, params, id):
    """GET /v1/transfers/:id/reversals"""
    sb.store.get("transfer", id)
    reversals = [reversal for reversal in sb.store.newest_first("transfer_reversal") if reversal["transfer"] == id]
    return paginate(reversals, params, f"/v1/transfers/{id}/reversals")


def set_available_balance(sb, currency, available):
    """Set what the platform has available, so a transfer can be made to run short."""
    sb.balance[currency.lower()] = available
    return balance(sb)
