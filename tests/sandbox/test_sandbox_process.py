"""The sandbox as a process: startup time, command-line webhooks, a clean SIGTERM, and flush."""

import stripe

from tests.fixtures.stripe_sandbox import start_sandbox
from tests.sandbox.scenarios import new_customer, open_invoice


def test_starts_quickly_delivers_to_command_line_webhooks_and_exits_cleanly(tmp_path, stripe_webhook_receiver):
    sandbox = start_sandbox("--webhook", stripe_webhook_receiver.url, "--webhook-secret", "whsec_from_cli",
                            "--public-url", "http://sandbox.test:9999", log_path=tmp_path / "sandbox.log")
    try:
        print(f"stripe-sandbox started in {sandbox.startup_seconds:.3f}s")
        assert sandbox.startup_seconds < 3
        assert any(line.startswith("webhook endpoint we_") for line in sandbox.stdout_lines)

        client = sandbox.client()
        invoice = open_invoice(client)
        assert invoice.hosted_invoice_url == f"http://sandbox.test:9999/invoices/{invoice.id}"
        [endpoint] = client.v1.webhook_endpoints.list().data
        assert endpoint.url == stripe_webhook_receiver.url and endpoint.enabled_events == ["*"]

        assert sandbox.drain()
        delivery = stripe_webhook_receiver.deliveries[0]
        event = stripe.Webhook.construct_event(delivery["body"], delivery["headers"]["stripe-signature"],
                                               "whsec_from_cli")
        assert event.type == "customer.created"

        sandbox.flush()
        assert [found.id for found in client.v1.webhook_endpoints.list().data] == [endpoint.id]
    finally:
        exit_code = sandbox.stop()
    assert exit_code == 0


def test_flush_forgets_objects_events_keys_and_clock(stripe_sandbox):
    client = stripe_sandbox.client()
    new_customer(client, metadata={"x": "1"})
    client.v1.customers.create(params={"email": "k@example.com"}, options={"idempotency_key": "kept?"})
    stripe_sandbox.control("POST", "clock/advance", {"seconds": 3600})
    stripe_sandbox.control("POST", "faults", {"method": "GET", "path": "/v1/charges", "mode": "500"})

    stripe_sandbox.flush()

    assert client.v1.customers.list().data == []
    assert client.v1.events.list().data == []
    assert stripe_sandbox.control("GET", "clock")["offset_seconds"] == 0
    assert stripe_sandbox.control("GET", "faults")["data"] == []
    assert stripe_sandbox.control("GET", "objects/customer")["data"] == []
    replay = client.v1.customers.create(params={"email": "other@example.com"}, options={"idempotency_key": "kept?"})
    assert replay.email == "other@example.com"


def test_objects_control_lists_everything_of_a_kind(stripe_sandbox):
    client = stripe_sandbox.client()
    invoice = open_invoice(client)
    assert [found["id"] for found in stripe_sandbox.control("GET", "objects/invoice")["data"]] == [invoice.id]
    assert stripe_sandbox.control("GET", "objects/invoices")["data"][0]["number"] == invoice.number
    assert stripe_sandbox.control("GET", "health")["status"] == "ok"
