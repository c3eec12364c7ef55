"""Connect: accounts, the platform balance, transfers and reversals."""

import pytest
import stripe

from tests.sandbox.scenarios import event_types, paid_charge


def partner_account(client):
    return client.v1.accounts.create(params={
        "type": "express",
        "email": "partner@example.com",
        "capabilities": {"transfers": {"requested": True}},
        "metadata": {"partner_id": "3"},
    })


def test_connected_account_create_and_retrieve(stripe_sandbox):
    client = stripe_sandbox.client()
    account = partner_account(client)

    assert account.id.startswith("acct_") and account.type == "express"
    fetched = client.v1.accounts.retrieve(account.id)
    assert fetched.email == "partner@example.com" and fetched.capabilities.transfers == "active"
    assert fetched.metadata.to_dict() == {"partner_id": "3"}


def test_transfer_funded_by_source_transaction_then_reversed(stripe_sandbox):
    client = stripe_sandbox.client()
    account = partner_account(client)
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
    account = partner_account(client)
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
