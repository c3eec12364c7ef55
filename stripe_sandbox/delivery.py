"""Webhook delivery: signed as Stripe signs, retried with backoff, and disturbed on demand by per-endpoint chaos.

Each endpoint has its own courier thread, so one slow or failing endpoint never holds up another, and deliveries
to one endpoint leave in a predictable order unless chaos says otherwise. Couriers take the sandbox lock only
to read an event and to record an outcome; the HTTP POST itself happens outside it.
"""

import heapq
import hmac
import http.client
import itertools
import json
import random
import threading
import time
from dataclasses import dataclass, field
from hashlib import sha256
from urllib.parse import urlsplit

DELIVERY_TIMEOUT_SECONDS = 10
SHUFFLE_HOLD_SECONDS = 1.0


def sign_payload(payload, secret, timestamp):
    """The `Stripe-Signature` header: `t=<unix>,v1=<HMAC-SHA256 of "t.payload" keyed by the whsec_ secret>`."""
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def post_event(url, payload, secret):
    """POST a signed payload; returns (HTTP status or None, connection error text or None)."""
    parts = urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    # Stripe signs with real time even when the sandbox clock has moved, so receivers' tolerance checks pass.
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": sign_payload(payload, secret, int(time.time())),
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks) stripe-sandbox",
    }
    connection = connection_class(parts.hostname, parts.port, timeout=DELIVERY_TIMEOUT_SECONDS)
    try:
        connection.request("POST", path, body=payload, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status, None
    except (http.client.HTTPException, OSError) as error:
        return None, f"{type(error).__name__}: {error}"
    finally:
        connection.close()


@dataclass
class Chaos:
    """How deliveries to one endpoint are disturbed, so that reconciliation can be tested."""

    duplicate: int = 1
    shuffle_window: int = 0
    delay_seconds: float = 0
    drop: bool = False
    drop_types: frozenset = frozenset()

    def drops(self, event_type):
        return self.drop or event_type in self.drop_types

    def describe(self):
        return {
            "duplicate": self.duplicate,
            "shuffle_window": self.shuffle_window,
            "delay_seconds": self.delay_seconds,
            "drop": self.drop,
            "drop_types": sorted(self.drop_types),
        }


NO_CHAOS = Chaos()


@dataclass(order=True)
class Job:
    due: float
    seq: int
    event_id: str = field(compare=False)
    event_type: str = field(compare=False)
    attempt: int = field(compare=False, default=1)


class Courier:
    """One endpoint's delivery queue and the thread that works through it."""

    def __init__(self, deliverer, endpoint_id, url, secret):
        self.deliverer = deliverer
        self.endpoint_id = endpoint_id
        self.url = url
        self.secret = secret
        self.generation = deliverer.generation
        self.condition = threading.Condition()
        self.queue = []
        self.held = []
        self.held_until = None
        self.stopped = False
        self.thread = threading.Thread(target=self._run, name=f"courier-{endpoint_id}", daemon=True)
        self.thread.start()

    def push(self, jobs, delay=0.0):
        """Queue jobs to leave after a delay; False if the courier has stopped."""
        with self.condition:
            if self.stopped:
                return False
            due = time.monotonic() + delay
            for job in jobs:
                job.due, job.seq = due, next(self.deliverer.sequence)
                heapq.heappush(self.queue, job)
            self.condition.notify()
            return True

    def hold(self, jobs, window, delay):
        """Collect jobs until a window's worth is held (or a moment has passed), then release them shuffled."""
        with self.condition:
            if self.stopped:
                return False
            self.held.extend((job, delay) for job in jobs)
            if self.held_until is None:
                self.held_until = time.monotonic() + SHUFFLE_HOLD_SECONDS
            if len(self.held) >= window:
                self._release_held()
            self.condition.notify()
            return True

    def release(self):
        """Let any shuffled jobs go now, so a drain does not wait for the hold to expire."""
        with self.condition:
            self._release_held()
            self.condition.notify()

    def _release_held(self):
        held, self.held, self.held_until = self.held, [], None
        if not held:
            return
        order = list(range(len(held)))
        random.shuffle(order)
        if len(order) > 1 and order == sorted(order):
            # A window must arrive out of order for a test to rely on it, so never hand back the original order.
            order = order[1:] + order[:1]
        shuffled = [held[index] for index in order]
        now = time.monotonic()
        for job, delay in shuffled:
            job.due, job.seq = now + delay, next(self.deliverer.sequence)
            heapq.heappush(self.queue, job)

    def stop(self):
        """Stop delivering; returns how many queued jobs were abandoned."""
        with self.condition:
            self.stopped = True
            abandoned = len(self.queue) + len(self.held)
            self.queue.clear()
            self.held.clear()
            self.condition.notify()
            return abandoned

    def _next_job(self):
        with self.condition:
            while not self.stopped:
                now = time.monotonic()
                if self.held_until is not None and self.held_until <= now:
                    self._release_held()
                if self.queue and self.queue[0].due <= now:
                    return heapq.heappop(self.queue)
                waits = [moment - now for moment in (self.held_until, self.queue[0].due if self.queue else None)
                         if moment is not None]
                self.condition.wait(min(waits) if waits else None)
            return None

    def _run(self):
        while (job := self._next_job()) is not None:
            self._attempt(job)

    def _attempt(self, job):
        payload = self.deliverer.payload_for(job.event_id, self.generation)
        if payload is None:  # flushed away since it was queued
            self.deliverer.finished(self.generation)
            return
        status, error = post_event(self.url, payload, self.secret)
        succeeded = error is None and 200 <= status < 300
        retry_in = None
        delays = self.deliverer.retry_delays
        if not succeeded and job.attempt <= len(delays):
            retry_in = delays[job.attempt - 1]
        self.deliverer.record(
            self, job, status=status, error=error, outcome="succeeded" if succeeded else "failed", retry_in=retry_in
        )
        if retry_in is None:
            self.deliverer.finished(self.generation)
            return
        retry = Job(0, 0, job.event_id, job.event_type, job.attempt + 1)
        if not self.push([retry], retry_in):
            self.deliverer.finished(self.generation)


class Deliverer:
    """Routes each event to its endpoints' couriers, applies chaos, and keeps the delivery log."""

    def __init__(self, sandbox, retry_delays):
        self.sandbox = sandbox
        self.retry_delays = list(retry_delays)
        self.sequence = itertools.count()
        self.generation = 0
        self.couriers = {}
        self.chaos = {}
        self.log = []
        self.outstanding = 0
        self.idle = threading.Condition()

    # -- endpoints and chaos; called with the sandbox lock held

    def add_endpoint(self, endpoint_id, url, secret):
        """Start delivering to a new endpoint."""
        self.couriers[endpoint_id] = Courier(self, endpoint_id, url, secret)

    def remove_endpoint(self, endpoint_id):
        """Stop delivering to a deleted endpoint."""
        courier = self.couriers.pop(endpoint_id, None)
        self.chaos.pop(endpoint_id, None)
        if courier is not None:
            self._settle(courier.stop())

    def set_chaos(self, endpoint_id, chaos):
        self.chaos[endpoint_id] = chaos

    def clear_chaos(self, endpoint_id):
        self.chaos.pop(endpoint_id, None)

    def deliver(self, event, endpoint_ids):
        """Hand an event to each addressed endpoint's courier, as its chaos settings dictate."""
        for endpoint_id in endpoint_ids:
            courier = self.couriers.get(endpoint_id)
            if courier is None:
                continue
            chaos = self.chaos.get(endpoint_id, NO_CHAOS)
            if chaos.drops(event["type"]):
                self._append_log(event["id"], event["type"], courier, attempt=1, status=None, error=None,
                                 outcome="dropped", retry_in=None)
                continue
            jobs = [Job(0, 0, event["id"], event["type"]) for _ in range(chaos.duplicate)]
            with self.idle:
                self.outstanding += len(jobs)
            if chaos.shuffle_window > 1:
                accepted = courier.hold(jobs, chaos.shuffle_window, chaos.delay_seconds)
            else:
                accepted = courier.push(jobs, chaos.delay_seconds)
            if not accepted:
                self._settle(len(jobs))

    def reset(self):
        """Forget all deliveries, couriers and chaos; in-flight attempts finish unrecorded."""
        for courier in self.couriers.values():
            courier.stop()
        self.couriers.clear()
        self.chaos.clear()
        self.log.clear()
        with self.idle:
            self.generation += 1
            self.outstanding = 0
            self.idle.notify_all()

    def stop(self):
        """Stop every courier, at shutdown."""
        for courier in self.couriers.values():
            courier.stop()

    # -- called by couriers, without the sandbox lock

    def payload_for(self, event_id, generation):
        """The event's current JSON, exactly as it will be signed; None if it no longer exists."""
        with self.sandbox.lock:
            event = self.sandbox.events.get(event_id)
            if event is None or generation != self.generation:
                return None
            return json.dumps(event, indent=2).encode()

    def record(self, courier, job, *, status, error, outcome, retry_in):
        """Log an attempt and, when it succeeded, count the event as delivered to that endpoint."""
        with self.sandbox.lock:
            if courier.generation != self.generation:
                return
            if outcome == "succeeded":
                self.sandbox.events.mark_delivered(job.event_id, courier.endpoint_id)
            self._append_log(job.event_id, job.event_type, courier, attempt=job.attempt, status=status, error=error,
                             outcome=outcome, retry_in=retry_in)

    def finished(self, generation):
        """A job is done for good: delivered, given up on, or abandoned."""
        self._settle(1, generation)

    # -- draining

    def drain(self, timeout):
        """Wait until nothing is queued, held or in flight; returns whether that happened within the timeout."""
        for courier in list(self.couriers.values()):
            courier.release()
        deadline = time.monotonic() + timeout
        with self.idle:
            while self.outstanding > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False, self.outstanding
                self.idle.wait(remaining)
            return True, 0

    def _settle(self, count, generation=None):
        with self.idle:
            if generation is not None and generation != self.generation:
                return
            self.outstanding = max(0, self.outstanding - count)
            if self.outstanding == 0:
                self.idle.notify_all()

    def _append_log(self, event_id, event_type, courier, *, attempt, status, error, outcome, retry_in):
        self.log.append({
            "event": event_id,
            "type": event_type,
            "endpoint": courier.endpoint_id,
            "url": courier.url,
            "attempt": attempt,
            "status": status,
            "error": error,
            "outcome": outcome,
            "retry_in_seconds": retry_in,
            "at": self.sandbox.clock.now(),
        })
