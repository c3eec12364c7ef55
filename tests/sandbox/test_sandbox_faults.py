"""Fault injection, seen through the official SDK as the portal would see it."""

import time

import pytest
import stripe

from tests.sandbox.scenarios import new_customer


def arm(sandbox, **fault):
    return sandbox.control("POST", "faults", fault)


def test_injected_500_is_an_api_error_and_is_not_kept_against_the_idempotency_key(stripe_sandbox):
    client = stripe_sandbox.client()
    arm(stripe_sandbox, method="POST", path="/v1/customers", mode="500", count=1)

    with pytest.raises(stripe.APIError) as failed:
        client.v1.customers.create(params={"email": "a@example.com"}, options={"idempotency_key": "cus-1"})
    assert failed.value.http_status == 500
    assert client.v1.customers.list().data == []

    created = client.v1.customers.create(params={"email": "a@example.com"}, options={"idempotency_key": "cus-1"})
    assert created.last_response.headers.get("Idempotent-Replayed") is None
    assert [customer.id for customer in client.v1.customers.list().data] == [created.id]


def test_injected_429_is_a_rate_limit_error_for_the_next_n_matching_requests(stripe_sandbox):
    client = stripe_sandbox.client()
    arm(stripe_sandbox, method="GET", path_regex=r"^/v1/customers$", mode="429", count=2)
    assert stripe_sandbox.control("GET", "faults")["data"][0]["remaining"] == 2

    for _ in range(2):
        with pytest.raises(stripe.RateLimitError):
            client.v1.customers.list()
    assert client.v1.customers.list().data == []
    assert stripe_sandbox.control("GET", "faults")["data"] == []


def test_faults_match_method_and_path(stripe_sandbox):
    client = stripe_sandbox.client()
    arm(stripe_sandbox, method="POST", path="/v1/invoices", mode="500", count=1)
    new_customer(client)
    client.v1.invoices.list()
    assert len(stripe_sandbox.control("GET", "faults")["data"]) == 1
    stripe_sandbox.control("DELETE", "faults")
    assert stripe_sandbox.control("GET", "faults")["data"] == []


def test_injected_reset_is_a_connection_error(stripe_sandbox):
    client = stripe_sandbox.client()
    arm(stripe_sandbox, method="POST", path="/v1/customers", mode="reset")

    with pytest.raises(stripe.APIConnectionError):
        new_customer(client)
    assert client.v1.customers.list().data == []


def test_injected_hang_times_out_a_short_client_timeout(stripe_sandbox):
    client = stripe_sandbox.client(timeout=0.5)
    arm(stripe_sandbox, method="GET", path="/v1/balance", mode="hang", hang_seconds=5)

    started = time.monotonic()
    with pytest.raises(stripe.APIConnectionError):
        client.v1.balance.retrieve()
    assert 0.4 <= time.monotonic() - started < 3
    stripe_sandbox.control("DELETE", "faults")  # wakes the held request instead of leaving it for 5 s
    assert client.v1.balance.retrieve().object == "balance"
