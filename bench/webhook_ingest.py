"""Webhook ingest: signed Stripe events accepted per second by POST /webhooks/stripe under gunicorn,
beside a bare Flask endpoint served the same way in the same run (target ≥ 0.5 of bare)."""
import hashlib
import hmac
import json
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench._payments_setup import scratch_environment
from bench.report import Result

TITLE = "Webhook ingest: signed events accepted per second under gunicorn, vs a bare Flask endpoint"
EVENTS = 2000
CLIENT_THREADS = 16
GUNICORN_WORKERS = 4
SECRET = "whsec_bench"
TARGET_RATIO = 0.5
REPO = Path(__file__).resolve().parent.parent
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(app_spec, env):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", str(GUNICORN_WORKERS), "-b",
                                f"127.0.0.1:{port}", "--log-level", "warning", app_spec], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, f"http://127.0.0.1:{port}/webhooks/stripe"
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"gunicorn {app_spec} did not start")


def signed_events(count, prefix):
    """Bodies and Stripe-Signature headers, made before the clock starts."""
    now = int(time.time())
    out = []
    for n in range(count):
        body = json.dumps({"id": f"evt_{prefix}_{n}", "object": "event", "type": "invoice.paid", "created": now,
                           "data": {"object": {"id": f"in_{n}", "object": "invoice", "metadata": {}}}}).encode()
        digest = hmac.new(SECRET.encode(), f"{now}.".encode() + body, hashlib.sha256).hexdigest()
        out.append((body, f"t={now},v1={digest}"))
    return out


def post(url, body, header):
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "Stripe-Signature": header})
    with NO_PROXY.open(request, timeout=30) as response:
        return response.status


def post_all(url, events):
    """Seconds to post these events with CLIENT_THREADS threads, each answered 200."""
    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        statuses = list(pool.map(lambda item: post(url, *item), events))
    elapsed = time.perf_counter() - started
    assert statuses == [200] * len(events), set(statuses)
    return elapsed


WARMUP = 200
# Bare and receiver take turns, round after round, so that load from elsewhere on a shared machine hits both alike
# (as in bench/board_polling.py); each contender's rate is its events over its summed time.
ROUNDS = 3


def measure(app_spec, env, events, prefix):
    """Seconds to accept `events` distinct events, after a warm-up, on a freshly started server."""
    process, url = serve(app_spec, env)
    try:
        post_all(url, signed_events(WARMUP, f"warm-{prefix}"))
        return post_all(url, signed_events(events, prefix))
    finally:
        process.terminate()
        process.wait(timeout=10)


def run(events=EVENTS):
    per_round = events // ROUNDS
    events = per_round * ROUNDS
    seconds = {"bare": 0.0, "portal": 0.0}
    with scratch_environment("ingest", STRIPE_WEBHOOK_SECRET=SECRET) as (app, env):
        # One server at a time: each gets the whole machine, and two masters never share a control socket.
        for n in range(ROUNDS):
            seconds["bare"] += measure("bench._bare_endpoint:app", env, per_round, f"bare-{n}")
            seconds["portal"] += measure("portal:create_app()", env, per_round, f"portal-{n}")
        with app.app_context():
            from portal.extensions import db
            from portal.payments.models import WebhookEvent

            stored = db.session.query(WebhookEvent).count() - WARMUP * ROUNDS
    bare_rate, portal_rate = events / seconds["bare"], events / seconds["portal"]
    ratio = portal_rate / bare_rate
    figures = {"events": events, "receiver events/s": round(portal_rate), "bare endpoint requests/s": round(bare_rate),
               "ratio": round(ratio, 2), f"meets target (≥ {TARGET_RATIO} of bare)": ratio >= TARGET_RATIO,
               "rows stored": stored}
    markdown = "\n".join([
        f"{events} distinct signed `invoice.paid` events posted by {CLIENT_THREADS} client threads to gunicorn "
        f"({GUNICORN_WORKERS} sync workers) on loopback; each is verified (HMAC, 300 s window), stored with "
        "one autocommitted INSERT … ON CONFLICT DO NOTHING in PostgreSQL (from a pool without pre-ping: one "
        "round trip, durable before the answer), then handed to the worker with one Redis command (SET NX of the "
        "drain marker; a drain job is queued only when none is waiting). The bare endpoint "
        "is a Flask app that reads the body and answers 200, served the same way, in the same run: the two take "
        f"turns for {ROUNDS} rounds of {per_round} events, each on a freshly started server after {WARMUP} "
        "events of warm-up. The receiver is `portal.payments.receiver.StripeWebhookShortcut`, which takes the "
        "delivery before Flask builds a request.",
        "",
        "| | requests/s |",
        "|---|---:|",
        f"| bare Flask endpoint | {bare_rate:.0f} |",
        f"| `POST /webhooks/stripe` | {portal_rate:.0f} |",
        "",
        f"Ratio {ratio:.2f}; target ≥ {TARGET_RATIO}: **{'met' if ratio >= TARGET_RATIO else 'NOT met'}**.",
    ])
    return Result(TITLE, figures, markdown)
