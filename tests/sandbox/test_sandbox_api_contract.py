"""Where the sandbox must behave like Stripe: auth, parameter checks, idempotency, lists and events."""

import json
from concurrent.futures import ThreadPoolExecutor
import urllib.error
import urllib.request

import pytest
import stripe

from stripe_sandbox.api import ROUTES
from stripe_sandbox.params import params_class, walk_schemas
from tests.sandbox.scenarios import NO_PROXY, new_customer, payment_link

DAY = 24 * 60 * 60


def raw_request(sandbox, method, path, headers=None, data=None):
    """An HTTP request without the SDK; returns (status, headers, decoded JSON)."""
    request = urllib.request.Request(sandbox.url + path, data=data, method=method, headers=headers or {})
    try:
        with NO_PROXY.open(request, timeout=10) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers, json.loads(error.read())


def test_every_routes_parameter_class_is_understood():
    # An SDK upgrade that types a parameter in a new way should fail here, not in the middle of a request.
    classes = set()
    for route in ROUTES:
        classes |= walk_schemas(params_class(route.params))
    assert len(classes) > len(ROUTES)


def test_requests_without_a_test_key_get_401_in_stripes_shape(stripe_sandbox):
    status, _, body = raw_request(stripe_sandbox, "GET", "/v1/customers")
    assert status == 401
    assert body["error"]["type"] == "invalid_request_error" and "API key" in body["error"]["message"]

    live = stripe.StripeClient("sk_live_123456789", base_addresses={"api": stripe_sandbox.url},
                               max_network_retries=0, http_client=stripe.UrllibClient())
    with pytest.raises(stripe.AuthenticationError):
        live.v1.customers.list()


def test_a_typo_in_a_nested_parameter_is_refused_with_its_full_path(stripe_sandbox):
    client = stripe_sandbox.client()
    with pytest.raises(stripe.InvalidRequestError) as typo:
        client.v1.payment_links.create(params={"line_items": [
            {"pricee_data": {"currency": "usd", "unit_amount": 500}, "quantity": 1}]})
    assert typo.value.http_status == 400
    assert typo.value.code == "parameter_unknown"
    assert typo.value.param == "line_items[0][pricee_data]"
    assert "Did you mean price_data?" in typo.value.user_message

    with pytest.raises(stripe.InvalidRequestError) as wrong_type:
        client.v1.invoices.create(params={"customer": "cus_x", "days_until_due": "soon"})
    assert wrong_type.value.param == "days_until_due" and "Invalid integer" in wrong_type.value.user_message

    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.transfers.create(params={"amount": 100, "currency": "usd"})
    assert missing.value.param == "destination" and missing.value.code == "parameter_missing"


def test_metadata_is_free_form(stripe_sandbox):
    customer = new_customer(stripe_sandbox.client(), metadata={"any_key": "x", "another-one": "y"})
    assert customer.metadata.to_dict() == {"any_key": "x", "another-one": "y"}


def test_unknown_urls_answer_like_stripe(stripe_sandbox):
    status, _, body = raw_request(stripe_sandbox, "GET", "/v1/subscriptions",
                                  headers={"Authorization": f"Bearer {stripe_sandbox.api_key}"})
    assert status == 404 and body["error"]["message"].startswith("Unrecognized request URL (GET: /v1/subscriptions)")


def test_same_idempotency_key_and_parameters_replays_the_response(stripe_sandbox):
    client = stripe_sandbox.client()
    first = client.v1.customers.create(params={"email": "a@example.com"}, options={"idempotency_key": "job-7-cus"})
    again = client.v1.customers.create(params={"email": "a@example.com"}, options={"idempotency_key": "job-7-cus"})

    assert again.id == first.id
    assert again.last_response.headers.get("Idempotent-Replayed") == "true"
    assert first.last_response.headers.get("Idempotent-Replayed") is None
    assert again.last_response.request_id == first.last_response.request_id
    assert len(client.v1.customers.list().data) == 1
    assert client.v1.events.list().data[0].request.idempotency_key == "job-7-cus"


def test_same_key_with_different_parameters_is_an_idempotency_error(stripe_sandbox):
    client = stripe_sandbox.client()
    client.v1.customers.create(params={"email": "a@example.com"}, options={"idempotency_key": "job-7-cus"})
    with pytest.raises(stripe.IdempotencyError) as mismatch:
        client.v1.customers.create(params={"email": "b@example.com"}, options={"idempotency_key": "job-7-cus"})
    assert mismatch.value.http_status == 400
    assert mismatch.value.error.type == "idempotency_error"


def test_failures_that_ran_are_replayed_too(stripe_sandbox):
    client = stripe_sandbox.client()
    for _ in range(2):
        with pytest.raises(stripe.InvalidRequestError) as missing:
            client.v1.invoices.create(params={"customer": "cus_gone"}, options={"idempotency_key": "inv-1"})
    assert missing.value.headers.get("Idempotent-Replayed") == "true"


def test_idempotency_keys_expire_after_24_hours_on_the_sandbox_clock(stripe_sandbox):
    client = stripe_sandbox.client()
    first = client.v1.customers.create(params={"email": "a@example.com"}, options={"idempotency_key": "k"})
    stripe_sandbox.control("POST", "clock/advance", {"seconds": DAY - 60})
    assert client.v1.customers.create(params={"email": "a@example.com"},
                                      options={"idempotency_key": "k"}).id == first.id
    stripe_sandbox.control("POST", "clock/advance", {"seconds": 120})

    later = client.v1.customers.create(params={"email": "a@example.com"}, options={"idempotency_key": "k"})
    assert later.id != first.id
    assert later.last_response.headers.get("Idempotent-Replayed") is None


def test_expand_replaces_ids_with_objects(stripe_sandbox):
    client = stripe_sandbox.client()
    link = payment_link(client)
    session = stripe_sandbox.control("POST", f"payment_links/{link.id}/pay", {"outcome": "card"})

    intent = client.v1.payment_intents.retrieve(session["payment_intent"], params={"expand": ["latest_charge"]})
    assert intent.latest_charge.object == "charge" and intent.latest_charge.amount == 5000
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.payment_intents.retrieve(session["payment_intent"], params={"expand": ["currency"]})
    assert refused.value.param == "expand[0]"


def test_events_list_filters_and_pagination(stripe_sandbox):
    client = stripe_sandbox.client()
    customers = [new_customer(client, email=f"c{index}@example.com") for index in range(5)]
    client.v1.products.create(params={"name": "Noise"})

    first_page = client.v1.events.list(params={"type": "customer.created", "limit": 2})
    assert [event.data.object.id for event in first_page.data] == [customers[4].id, customers[3].id]
    assert first_page.has_more is True and first_page.url == "/v1/events"
    second_page = client.v1.events.list(
        params={"type": "customer.created", "limit": 2, "starting_after": first_page.data[-1].id})
    assert [event.data.object.id for event in second_page.data] == [customers[2].id, customers[1].id]
    back = client.v1.events.list(
        params={"type": "customer.created", "limit": 2, "ending_before": second_page.data[0].id})
    assert [event.id for event in back.data] == [event.id for event in first_page.data]

    everything = list(client.v1.events.list(params={"type": "customer.created", "limit": 2}).auto_paging_iter())
    assert len(everything) == 5

    assert [event.type for event in client.v1.events.list(params={"types": ["product.created"]}).data] == [
        "product.created"]
    assert client.v1.events.list(params={"type": "customer.*"}).data[0].type == "customer.created"
    newest = client.v1.events.list(params={"limit": 1}).data[0]
    assert newest.id.startswith("evt_") and newest.api_version == stripe.api_version
    assert client.v1.events.list(params={"created": {"gt": newest.created}}).data == []
    assert len(client.v1.events.list(params={"created": {"lte": newest.created}, "limit": 100}).data) == 6
    assert client.v1.events.retrieve(first_page.data[0].id).data.object.email == "c4@example.com"
    assert len(client.v1.events.list(params={"delivery_success": True, "limit": 100}).data) == 6


def test_concurrent_requests_with_one_idempotency_key_create_one_object(stripe_sandbox):
    def create(_):
        # One client per thread, without pooled connections, as separate portal workers would have.
        client = stripe.StripeClient(stripe_sandbox.api_key, base_addresses={"api": stripe_sandbox.url},
                                     max_network_retries=0, http_client=stripe.UrllibClient())
        return client.v1.customers.create(params={"email": "race@example.com"},
                                          options={"idempotency_key": "race"}).id

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(create, range(16)))

    assert len(set(ids)) == 1
    assert len(stripe_sandbox.control("GET", "objects/customer")["data"]) == 1
