"""The sandbox's in-memory state: stored objects, ids, the movable clock and idempotency keys."""

import copy
import secrets
import string
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone

from stripe_sandbox.errors import StripeError, resource_missing

ID_ALPHABET = string.ascii_letters + string.digits

# Stripe's id prefixes, longest first so `trr_` is not read as `tr_`.
KIND_BY_PREFIX = dict(
    sorted(
        {
            "acct": "account",
            "ch": "charge",
            "cs_test": "checkout.session",
            "cus": "customer",
            "du": "dispute",
            "evt": "event",
            "ii": "invoiceitem",
            "in": "invoice",
            "inpay": "invoice_payment",
            "pi": "payment_intent",
            "plink": "payment_link",
            "price": "price",
            "prod": "product",
            "re": "refund",
            "tr": "transfer",
            "trr": "transfer_reversal",
            "txr": "tax_rate",
            "we": "webhook_endpoint",
        }.items(),
        key=lambda item: -len(item[0]),
    )
)
PREFIX_BY_KIND = {kind: prefix for prefix, kind in KIND_BY_PREFIX.items()}


def random_token(length):
    """Letters and digits, as in Stripe's ids and secrets."""
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(length))


def new_id(kind):
    """A fresh id with Stripe's prefix for the kind of object."""
    length = 58 if kind == "checkout.session" else 24
    return f"{PREFIX_BY_KIND[kind]}_{random_token(length)}"


class Clock:
    """UTC wall-clock time plus an offset that tests move forward to let invoices fall due."""

    def __init__(self):
        self.offset_seconds = 0

    def now(self):
        """The sandbox's current time, as Unix seconds."""
        return int(datetime.now(timezone.utc).timestamp()) + self.offset_seconds

    def advance(self, seconds):
        """Move the sandbox's time forward."""
        self.offset_seconds += seconds

    def reset(self):
        """Back to real time."""
        self.offset_seconds = 0

    def describe(self):
        """The clock as the controls report it."""
        now = self.now()
        return {
            "now": now,
            "iso": datetime.fromtimestamp(now, timezone.utc).isoformat(),
            "offset_seconds": self.offset_seconds,
        }


class Store:
    """Every object, by kind and id, kept in the exact shape the API returns."""

    def __init__(self):
        self.objects = defaultdict(dict)

    def add(self, obj):
        """Keep a new object; returns it."""
        self.objects[obj["object"]][obj["id"]] = obj
        return obj

    def get(self, kind, object_id, param="id"):
        """The object, or Stripe's 404."""
        obj = self.objects[kind].get(object_id) if isinstance(object_id, str) else None
        if obj is None:
            raise resource_missing(kind, object_id, param)
        return obj

    def find(self, object_id):
        """Whatever object has this id, judged by its prefix; None when there is none."""
        prefix = next((prefix for prefix in KIND_BY_PREFIX if object_id.startswith(prefix + "_")), None)
        if prefix is None:
            return None
        return self.objects[KIND_BY_PREFIX[prefix]].get(object_id)

    def remove(self, kind, object_id):
        """Forget an object."""
        self.objects[kind].pop(object_id, None)

    def newest_first(self, kind):
        """All objects of a kind, most recently created first, as Stripe lists them."""
        return list(reversed(self.objects[kind].values()))

    def clear(self):
        """Forget every object."""
        self.objects.clear()


@dataclass
class StoredResponse:
    fingerprint: str
    status: int
    body: dict
    request_id: str
    saved_at: int


class IdempotencyKeys:
    """Stripe's idempotency: a key replays its first response for 24 hours, measured on the sandbox clock."""

    ttl_seconds = 24 * 60 * 60

    def __init__(self, clock):
        self.clock = clock
        self.responses = {}

    def replay(self, api_key, key, fingerprint):
        """The stored response for this key, None if the key is new, or an error if it was used differently."""
        stored = self.responses.get((api_key, key))
        if stored is None:
            return None
        if self.clock.now() - stored.saved_at >= self.ttl_seconds:
            del self.responses[(api_key, key)]
            return None
        if stored.fingerprint != fingerprint:
            raise StripeError(
                "Keys for idempotent requests can only be used with the same parameters they were first used "
                f"with. Try using a key other than '{key}' if you meant to execute a different request.",
                type="idempotency_error",
            )
        return stored

    def save(self, api_key, key, fingerprint, status, body, request_id):
        """Remember a response against its key."""
        self.responses[(api_key, key)] = StoredResponse(
            fingerprint, status, copy.deepcopy(body), request_id, self.clock.now()
        )

    def clear(self):
        """Forget every key."""
        self.responses.clear()
