"""The sandbox as a whole: state, clock, events, deliveries and faults, behind one lock."""

import contextvars
import threading
from dataclasses import dataclass, field

from stripe_sandbox.delivery import Deliverer
from stripe_sandbox.events import EventLog, subscribes_to
from stripe_sandbox.faults import FaultBook
from stripe_sandbox.shapes import shaped
from stripe_sandbox.state import Clock, IdempotencyKeys, Store, new_id, random_token

DEFAULT_RETRY_DELAYS = (1, 2, 4, 8, 16)

# The API request being served, so events can carry Stripe's `request: {id, idempotency_key}`.
current_request = contextvars.ContextVar("current_request", default=None)


@dataclass
class StartupEndpoint:
    """A webhook endpoint given on the command line; it survives a flush with the same id and secret."""

    url: str
    secret: str
    id: str = field(default_factory=lambda: new_id("webhook_endpoint"))


def new_webhook_secret():
    """A signing secret in Stripe's `whsec_…` form."""
    return f"whsec_{random_token(32)}"


class Sandbox:
    """Everything the sandbox knows. Callers hold `lock` around any read or change of state."""

    def __init__(self, *, public_url, retry_delays=DEFAULT_RETRY_DELAYS, startup_endpoints=()):
        self.public_url = public_url.rstrip("/")
        self.lock = threading.RLock()
        self.clock = Clock()
        self.store = Store()
        self.idempotency = IdempotencyKeys(self.clock)
        self.events = EventLog()
        self.faults = FaultBook()
        self.deliverer = Deliverer(self, retry_delays)
        self.startup_endpoints = list(startup_endpoints)
        self._reset_ledgers()
        self._register_startup_endpoints()

    def _reset_ledgers(self):
        self.balance = {}
        self.endpoint_secrets = {}
        self.endpoint_scopes = {}  # endpoint id → "account", "connect" or "both" (Stripe keeps it off the object)
        # What a PaymentIntent pays for: ("invoice", in_…) or ("checkout.session", cs_…).
        self.intent_purpose = {}
        self.invoice_intent = {}
        # Stripe keeps these off the objects themselves: an invoice's payment terms, and the line items of a
        # payment link or checkout session (returned only through `expand` or their `/line_items` lists).
        self.days_until_due = {}
        self.line_items = {}
        self.overdue_reported = set()
        # Account links' tokens → the account, its return and refresh URLs (Stripe keeps these off any object).
        self.onboarding_links = {}

    def _register_startup_endpoints(self):
        for startup in self.startup_endpoints:
            self.add_webhook_endpoint(startup.url, ["*"], secret=startup.secret, endpoint_id=startup.id,
                                      description="Given on the command line", scope="both")

    # -- events

    def emit(self, event_type, obj, previous=None):
        """Record an event for a state change and send it to every endpoint that wants it.

        A change to a connected account is a Connect event: it goes to Connect endpoints only, every other event
        to account endpoints only, as in Stripe. Endpoints given on the command line get both, as `stripe listen`
        forwards Connect events to its one URL by default.
        """
        account = obj["id"] if obj.get("object") == "account" else None
        wanted = {"connect" if account else "account", "both"}
        endpoint_ids = [
            endpoint["id"]
            for endpoint in self.store.objects["webhook_endpoint"].values()
            if subscribes_to(endpoint, event_type) and self.endpoint_scopes.get(endpoint["id"], "account") in wanted
        ]
        event = self.events.record(
            event_type,
            obj,
            created=self.clock.now(),
            previous=previous,
            request=current_request.get(),
            endpoint_ids=endpoint_ids,
            account=account,
        )
        self.deliverer.deliver(event, endpoint_ids)
        return event

    # -- webhook endpoints

    def add_webhook_endpoint(self, url, enabled_events, *, secret=None, endpoint_id=None, description=None,
                             metadata=None, api_version=None, scope="account"):
        """Create an endpoint that receives deliveries from now on; returns it and its signing secret.

        `scope`: "account" (events on the platform's own account), "connect" (events on connected accounts,
        Stripe's `connect=true`), or "both" (the command line's endpoints).
        """
        secret = secret or new_webhook_secret()
        endpoint = self.store.add(shaped(
            "webhook_endpoint",
            id=endpoint_id or new_id("webhook_endpoint"),
            api_version=api_version,
            created=self.clock.now(),
            description=description,
            enabled_events=list(enabled_events),
            metadata=metadata or {},
            status="enabled",
            url=url,
        ))
        self.endpoint_secrets[endpoint["id"]] = secret
        self.endpoint_scopes[endpoint["id"]] = scope
        self.deliverer.add_endpoint(endpoint["id"], url, secret)
        return endpoint, secret

    def remove_webhook_endpoint(self, endpoint_id):
        """Delete an endpoint; nothing more is delivered to it."""
        self.store.remove("webhook_endpoint", endpoint_id)
        self.endpoint_secrets.pop(endpoint_id, None)
        self.endpoint_scopes.pop(endpoint_id, None)
        self.deliverer.remove_endpoint(endpoint_id)

    # -- money

    def credit(self, currency, amount):
        """Move money into (or, negative, out of) the platform's available balance."""
        self.balance[currency] = self.balance.get(currency, 0) + amount

    def available(self, currency):
        return self.balance.get(currency, 0)

    # -- whole-sandbox controls

    def flush(self):
        """Forget everything except the command-line webhook endpoints, and put the clock back."""
        self.store.clear()
        self.events.clear()
        self.idempotency.clear()
        self.faults.clear()
        self.deliverer.reset()
        self.clock.reset()
        self._reset_ledgers()
        self._register_startup_endpoints()

    def shutdown(self):
        """Stop background delivery."""
        self.deliverer.stop()
        self.faults.clear()
