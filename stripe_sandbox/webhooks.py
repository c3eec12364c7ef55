"""The API's webhook endpoints and events."""
from flask import request

from stripe_sandbox.errors import resource_missing
from stripe_sandbox.events import type_matches
from stripe_sandbox.listing import list_matching
from stripe_sandbox.shapes import apply_changes, deleted, updated_metadata


def create_webhook_endpoint(sb, params):
    """POST /v1/webhook_endpoints — the answer, and only this one, carries the signing `secret`."""
    endpoint, secret = sb.add_webhook_endpoint(
        params["url"],
        params["enabled_events"],
        description=params.get("description") or None,
        metadata=params.get("metadata") or {},
        api_version=params.get("api_version"),
        scope="connect" if params.get("connect") in (True, "true") else "account",
    )
    return dict(endpoint, secret=secret)


def retrieve_webhook_endpoint(sb, params, id):
    """GET /v1/webhook_endpoints/:id"""
    return sb.store.get("webhook_endpoint", id)


def update_webhook_endpoint(sb, params, id):
    """POST /v1/webhook_endpoints/:id — `enabled_events`, `disabled`, `description`, `metadata`."""
    endpoint = sb.store.get("webhook_endpoint", id)
    changes = {}
    if "enabled_events" in params:
        changes["enabled_events"] = params["enabled_events"]
    if "disabled" in params:
        changes["status"] = "disabled" if params["disabled"] else "enabled"
    if "description" in params:
        changes["description"] = params["description"] or None
    if "metadata" in params:
        changes["metadata"] = updated_metadata(endpoint["metadata"], params["metadata"])
    apply_changes(endpoint, changes)
    return endpoint


def delete_webhook_endpoint(sb, params, id):
    """DELETE /v1/webhook_endpoints/:id"""
    endpoint = sb.store.get("webhook_endpoint", id)
    sb.remove_webhook_endpoint(id)
    return deleted(endpoint)


def list_webhook_endpoints(sb, params):
    """GET /v1/webhook_endpoints"""
    return list_matching(sb.store.newest_first("webhook_endpoint"), params, "/v1/webhook_endpoints")


def retrieve_event(sb, params, id):
    """GET /v1/events/:id"""
    event = sb.events.get(id)
    if event is None:
        raise resource_missing("event", id)
    return event


def list_events(sb, params):
    """GET /v1/events — `type` (with a trailing `*`), `types`, `created`, `delivery_success`.

    The platform's own events; those of a connected account only with its `Stripe-Account` header, as at Stripe.
    """
    account = request.headers.get("Stripe-Account")
    events = [event for event in sb.events.newest_first() if event.get("account") == account]
    if "type" in params:
        events = [event for event in events if type_matches(params["type"], event["type"])]
    if "types" in params:
        events = [event for event in events if any(type_matches(pattern, event["type"]) for pattern in params["types"])]
    if "delivery_success" in params:
        # Stripe: false lists events still pending or that failed delivery to some endpoint.
        wanted = params["delivery_success"]
        events = [event for event in events if (event["pending_webhooks"] == 0) == wanted]
    return list_matching(events, params, "/v1/events")
