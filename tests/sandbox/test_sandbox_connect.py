"""Connect: accounts, the platform balance, transfers and reversals."""

import json

import pytest
import stripe

from tests.fixtures.stripe_sandbox import no_redirect_post
from tests.sandbox.scenarios import event_types, http_get, paid_charge, webhook_endpoint


def new_express_account(client):
    return client.v1.accounts.create(params={
        "type": "express",
        "email": "partner@example.com",
        "capabilities": {"transfers": {"requested": True}},
        "metadata": {"partner_id": "3"},
    })


def partner_account(client, sandbox):
    """An express account that has finished onboarding, so transfers can go to it."""
    account = new_express_account(client)
    sandbox.control("POST", f"accounts/{account.id}/onboard")
    return client.v1.accounts.retrieve(account.id)


def test_connected_account_create_and_retrieve(stripe_sandbox):
    client = stripe_sandbox.client()
    account = new_express_account(client)

    assert account.id.startswith("acct_") and account.type == "express"
    fetched = client.v1.accounts.retrieve(account.id)
    assert fetched.email == "partner@example.com" and fetched.metadata.to_dict() == {"partner_id": "3"}
    # Not onboarded yet: an express account waits for its owner (https://docs.stripe.com/connect/express-accounts).
    assert (fetched.details_submitted, fetched.payouts_enabled, fetched.capabilities.transfers) == (False, False,
                                                                                                    "inactive")
    assert "external_account" in fetched.requirements.currently_due


def test_a_transfer_to_an_account_not_onboarded_is_refused(stripe_sandbox):
    client = stripe_sandbox.client()
    account = new_express_account(client)
    paid_charge(stripe_sandbox, client, 3000)
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.transfers.create(params={"destination": account.id, "amount": 100, "currency": "usd"})
    assert refused.value.code == "insufficient_capabilities_for_transfer" and refused.value.param == "destination"
    assert client.v1.transfers.list().data == []


def test_account_link_onboarding_page_enables_the_account_and_returns(stripe_sandbox, stripe_webhook_receiver):
    client = stripe_sandbox.client()
    webhook_endpoint(client, stripe_webhook_receiver, ["account.updated"], connect=True)
    account = new_express_account(client)
    link = client.v1.account_links.create(params={
        "account": account.id, "type": "account_onboarding",
        "refresh_url": "https://portal.example/office/partners/3/onboarding",
        "return_url": "https://portal.example/office/partners/3",
    })
    assert link.object == "account_link" and link.expires_at == link.created + 300
    assert link.url.startswith(stripe_sandbox.url + "/connect/onboarding/")

    status, page = http_get(link.url)
    assert status == 200 and "Complete onboarding" in page and account.id in page
    assert no_redirect_post(link.url) == (303, "https://portal.example/office/partners/3")

    enabled = client.v1.accounts.retrieve(account.id)
    assert (enabled.details_submitted, enabled.charges_enabled, enabled.payouts_enabled) == (True, True, True)
    assert enabled.capabilities.transfers == "active" and enabled.requirements.currently_due == []
    assert event_types(client, type="account.updated") == []  # a Connect event: not in the platform's list
    (event,) = client.v1.events.list(params={"type": "account.updated"},
                                     options={"stripe_account": account.id}).data
    assert event.data.previous_attributes.payouts_enabled is False
    stripe_webhook_receiver.wait_for(1)
    assert [(event["type"], event["account"]) for event in stripe_webhook_receiver.events()] == [
        ("account.updated", account.id)]
    # Single use, as at Stripe: the used link sends the partner to refresh_url for a new one.
    assert no_redirect_post(link.url) == (303, "https://portal.example/office/partners/3/onboarding")


def test_account_link_parameters_are_checked(stripe_sandbox):
    client = stripe_sandbox.client()
    account = new_express_account(client)
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.account_links.create(params={"account": account.id, "type": "account_onboarding",
                                               "return_url": "https://x.example", "refresh_url": "https://x.example",
                                               "colour": "blue"})
    assert unknown.value.code == "parameter_unknown"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.account_links.create(params={"account": "acct_nope", "type": "account_onboarding",
                                               "return_url": "https://x.example", "refresh_url": "https://x.example"})
    assert missing.value.code == "resource_missing"


def test_transfer_funded_by_source_transaction_then_reversed(stripe_sandbox):
    client = stripe_sandbox.client()
    account = partner_account(client, stripe_sandbox)
    charge = paid_charge(stripe_sandbox, client, 10000)
    stripe_sandbox.control("POST", "balance", {"currency": "usd", "available": 0})

    transfer = client.v1.transfers.create(params={
        "destination": account.id, "amount": 1500, "currency": "usd", "source_transaction": charge.id,
        "transfer_group": "job-42", "metadata": {"referral_id": "9"},
    })
    assert transfer.id.startswith("tr_") and transfer.source_transaction == charge.id
    assert client.v1.transfers.retrieve(transfer.id).transfer_group == "job-42"

    with pytest.raises(stripe.InvalidRequestError) as beyond_charge:
        client.v1.transfers.create(params={"destination": account.id, "amount": 8501, "currency": "usd",
                                           "source_transaction": charge.id})
    assert beyond_charge.value.code == "balance_insufficient"

    partial = client.v1.transfers.reversals.create(transfer.id, params={"amount": 500})
    assert partial.id.startswith("trr_") and partial.transfer == transfer.id
    rest = client.v1.transfers.reversals.create(transfer.id)
    assert rest.amount == 1000
    reversed_transfer = client.v1.transfers.retrieve(transfer.id)
    assert reversed_transfer.amount_reversed == 1500 and reversed_transfer.reversed is True
    assert event_types(client, type="transfer.*") == ["transfer.reversed", "transfer.reversed", "transfer.created"]


def test_transfer_without_enough_balance_is_balance_insufficient(stripe_sandbox):
    client = stripe_sandbox.client()
    account = partner_account(client, stripe_sandbox)
    paid_charge(stripe_sandbox, client, 3000)
    assert client.v1.balance.retrieve().available[0].amount == 3000

    client.v1.transfers.create(params={"destination": account.id, "amount": 2000, "currency": "usd"})
    with pytest.raises(stripe.InvalidRequestError) as short:
        client.v1.transfers.create(params={"destination": account.id, "amount": 1001, "currency": "usd"})
    assert short.value.code == "balance_insufficient"
    assert short.value.http_status == 400
    assert client.v1.balance.retrieve().available[0].amount == 1000


def test_transfer_to_unknown_account_is_refused(stripe_sandbox):
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_sandbox.client().v1.transfers.create(params={"destination": "acct_nope", "amount": 1,
                                                            "currency": "usd"})
    assert refused.value.param == "destination"


def test_connected_account_events_go_to_connect_endpoints_only(stripe_sandbox, stripe_webhook_receiver):
    """As at Stripe: an account endpoint hears the platform's own events, a Connect endpoint those of
    connected accounts (with `account` set), whatever their enabled_events say."""
    client = stripe_sandbox.client()
    account_endpoint = webhook_endpoint(client, stripe_webhook_receiver, ["*"])
    connect_endpoint = webhook_endpoint(client, stripe_webhook_receiver, ["*"], connect=True)
    account = new_express_account(client)
    stripe_sandbox.control("POST", f"accounts/{account.id}/onboard")
    client.v1.customers.create(params={"email": "ap@example.com"})
    assert stripe_sandbox.drain()

    heard = {}
    for delivery in stripe_webhook_receiver.deliveries:
        event = json.loads(delivery["body"])
        for secret, endpoint in ((account_endpoint.secret, "account"), (connect_endpoint.secret, "connect")):
            try:
                stripe.Webhook.construct_event(delivery["body"], delivery["headers"]["stripe-signature"], secret)
            except stripe.SignatureVerificationError:
                continue
            heard.setdefault(endpoint, []).append((event["type"], event.get("account")))
    assert ("customer.created", None) in heard["account"]
    assert all(account_id is None for _, account_id in heard["account"])
    assert heard["connect"] == [("account.updated", account.id)]
