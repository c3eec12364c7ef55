"""The event log: one Stripe `event` per state change, with the bookkeeping behind `delivery_success`."""

import copy

import stripe

from stripe_sandbox.shapes import shaped
from stripe_sandbox.state import new_id


def subscribes_to(endpoint, event_type):
    """Whether a webhook endpoint's `enabled_events` covers an event type."""
    return endpoint["status"] == "enabled" and any(
        pattern in ("*", event_type) for pattern in endpoint["enabled_events"]
    )


def type_matches(pattern, event_type):
    """The events list's `type` filter, which allows a trailing `*` as in `invoice.*`."""
    if pattern.endswith("*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


class EventLog:
    """Events in the order they happened, and which endpoints have yet to accept each one."""

    def __init__(self):
        self.events = {}
        self.awaiting = {}

    def record(self, event_type, obj, *, created, previous=None, request=None, endpoint_ids=(), account=None):
        """Append an event holding a snapshot of the object, addressed to the given endpoints; `account` names the
        connected account it happened on (a Connect event), as Stripe's `event.account` does."""
        data = {"object": copy.deepcopy(obj)}
        if previous:
            data["previous_attributes"] = copy.deepcopy(previous)
        event = shaped(
            "event",
            id=new_id("event"),
            api_version=stripe.api_version,
            created=created,
            data=data,
            pending_webhooks=len(endpoint_ids),
            request=request or {"id": None, "idempotency_key": None},
            type=event_type,
        )
        if account:
            event["account"] = account
        self.events[event["id"]] = event
        self.awaiting[event["id"]] = set(endpoint_ids)
        return event

    def get(self, event_id):
        """The event, or None."""
        return self.events.get(event_id)

    def mark_delivered(self, event_id, endpoint_id):
        """An endpoint accepted the event."""
        awaiting = self.awaiting.get(event_id)
        if awaiting is None:
            return
        awaiting.discard(endpoint_id)
        self.events[event_id]["pending_webhooks"] = len(awaiting)

    def newest_first(self):
        """Every event, most recent first."""
        return list(reversed(self.events.values()))

    def clear(self):
        """Forget every event."""
        self.events.clear()
        self.awaiting.clear()
