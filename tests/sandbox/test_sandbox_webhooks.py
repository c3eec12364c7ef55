"""Webhook endpoints and deliveries: signatures, retries, and each chaos mode."""

import time

import pytest
import stripe

from tests.sandbox.scenarios import new_customer, webhook_endpoint


def delivered_event_ids(receiver):
    return [event["id"] for event in receiver.events()]


def test_webhook_endpoint_create_list_delete(stripe_sandbox, stripe_webhook_receiver):
    client = stripe_sandbox.client()
    endpoint = webhook_endpoint(client, stripe_webhook_receiver, ["invoice.paid", "charge.refunded"])

    assert endpoint.id.startswith("we_") and endpoint.secret.startswith("whsec_")
    listed = client.v1.webhook_endpoints.list().data
    assert [found.id for found in listed] == [endpoint.id]
    assert listed[0].enabled_events == ["invoice.paid", "charge.refunded"]
    assert "secret" not in client.v1.webhook_endpoints.retrieve(endpoint.id)

    assert client.v1.webhook_endpoints.delete(endpoint.id).deleted is True
    assert client.v1.webhook_endpoints.list().data == []
    new_customer(client)
    assert stripe_sandbox.drain()
    assert stripe_webhook_receiver.deliveries == []


def test_deliveries_are_signed_so_the_sdk_verifier_accepts_them(stripe_sandbox, stripe_webhook_receiver):
    client = stripe_sandbox.client()
    endpoint = webhook_endpoint(client, stripe_webhook_receiver)
    customer = new_customer(client)

    [delivery] = stripe_webhook_receiver.wait_for(1)
    assert delivery["headers"]["content-type"] == "application/json; charset=utf-8"
    event = stripe.Webhook.construct_event(delivery["body"], delivery["headers"]["stripe-signature"],
                                           endpoint.secret)
    assert event.type == "customer.created" and event.data.object.id == customer.id
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(delivery["body"], delivery["headers"]["stripe-signature"],
                                       "whsec_not_the_secret")


def test_only_enabled_events_are_delivered(stripe_sandbox, stripe_webhook_receiver):
    client = stripe_sandbox.client()
    webhook_endpoint(client, stripe_webhook_receiver, ["product.created"])
    new_customer(client)
    product = client.v1.products.create(params={"name": "Only this"})

    assert stripe_sandbox.drain()
    assert [event["data"]["object"]["id"] for event in stripe_webhook_receiver.events()] == [product.id]


def test_a_failed_delivery_is_retried_until_accepted(stripe_sandbox, stripe_webhook_receiver):
    client = stripe_sandbox.client()
    endpoint = webhook_endpoint(client, stripe_webhook_receiver)
    stripe_webhook_receiver.respond_with(500)
    new_customer(client)

    assert stripe_sandbox.drain()
    first, second = stripe_webhook_receiver.deliveries
    assert (first["status"], second["status"]) == (500, 200)
    assert second["at"] - first["at"] >= 0.2  # the first retry delay the test sandbox runs with
    attempts = stripe_sandbox.control("GET", f"/_sandbox/deliveries?endpoint={endpoint.id}")["data"]
    assert [(attempt["attempt"], attempt["outcome"]) for attempt in attempts] == [(1, "failed"), (2, "succeeded")]
    event = client.v1.events.list().data[0]
    assert event.pending_webhooks == 0
    assert client.v1.events.list(params={"delivery_success": False}).data == []


def test_delivery_gives_up_after_the_last_retry_and_reports_failure(stripe_sandbox, stripe_webhook_receiver):
    client = stripe_sandbox.client()
    webhook_endpoint(client, stripe_webhook_receiver)
    stripe_webhook_receiver.respond_with(503, 503, 503, 503)
    customer = new_customer(client)

    assert stripe_sandbox.drain()
    assert [delivery["status"] for delivery in stripe_webhook_receiver.deliveries] == [503] * 4
    failed = client.v1.events.list(params={"delivery_success": False}).data
    assert [event.data.object.id for event in failed] == [customer.id]
    assert failed[0].pending_webhooks == 1


def test_chaos_duplicate_delivers_each_event_n_times(stripe_sandbox, stripe_webhook_receiver):
    client = stripe_sandbox.client()
    endpoint = webhook_endpoint(client, stripe_webhook_receiver)
    stripe_sandbox.control("POST", f"webhook_endpoints/{endpoint.id}/chaos", {"duplicate": 3})
    new_customer(client)

    assert stripe_sandbox.drain()
    ids = delivered_event_ids(stripe_webhook_receiver)
    assert len(ids) == 3 and len(set(ids)) == 1


def test_chaos_shuffle_reorders_a_window(stripe_sandbox, stripe_webhook_receiver):
    client = stripe_sandbox.client()
    endpoint = webhook_endpoint(client, stripe_webhook_receiver)
    stripe_sandbox.control("POST", f"webhook_endpoints/{endpoint.id}/chaos", {"shuffle_window": 4})
    for index in range(4):
        new_customer(client, email=f"c{index}@example.com")

    assert stripe_sandbox.drain()
    emitted = [event.id for event in reversed(client.v1.events.list().data)]
    delivered = delivered_event_ids(stripe_webhook_receiver)
    assert sorted(delivered) == sorted(emitted)
    assert delivered != emitted


def test_chaos_delay_holds_deliveries_back(stripe_sandbox, stripe_webhook_receiver):
    client = stripe_sandbox.client()
    endpoint = webhook_endpoint(client, stripe_webhook_receiver)
    stripe_sandbox.control("POST", f"webhook_endpoints/{endpoint.id}/chaos", {"delay_seconds": 1})
    emitted_at = time.monotonic()
    new_customer(client)

    time.sleep(0.3)
    assert stripe_webhook_receiver.deliveries == []
    [delivery] = stripe_webhook_receiver.wait_for(1, timeout=5)
    assert delivery["at"] - emitted_at >= 1


def test_chaos_drop_loses_deliveries_and_reports_them_undelivered(stripe_sandbox, stripe_webhook_receiver):
    client = stripe_sandbox.client()
    endpoint = webhook_endpoint(client, stripe_webhook_receiver)
    stripe_sandbox.control("POST", f"webhook_endpoints/{endpoint.id}/chaos", {"drop": True})
    lost = new_customer(client)
    stripe_sandbox.control("DELETE", f"webhook_endpoints/{endpoint.id}/chaos")
    kept = new_customer(client)

    assert stripe_sandbox.drain()
    assert [event["data"]["object"]["id"] for event in stripe_webhook_receiver.events()] == [kept.id]
    undelivered = client.v1.events.list(params={"delivery_success": False}).data
    assert [event.data.object.id for event in undelivered] == [lost.id]
    dropped = stripe_sandbox.control("GET", "/_sandbox/deliveries?outcome=dropped")["data"]
    assert [attempt["event"] for attempt in dropped] == [undelivered[0].id]


def test_chaos_drop_types_loses_only_those_types(stripe_sandbox, stripe_webhook_receiver):
    client = stripe_sandbox.client()
    endpoint = webhook_endpoint(client, stripe_webhook_receiver)
    stripe_sandbox.control("POST", f"webhook_endpoints/{endpoint.id}/chaos", {"drop_types": ["customer.created"]})
    new_customer(client)
    client.v1.products.create(params={"name": "Delivered"})

    assert stripe_sandbox.drain()
    assert [event["type"] for event in stripe_webhook_receiver.events()] == ["product.created"]
    assert [event.type for event in client.v1.events.list(params={"delivery_success": False}).data] == [
        "customer.created"]
