"""Secrets never in logs, error pages or the error texts people read (issue 8, Security: Secrets).

Every test captures all loggers at DEBUG (Flask's, werkzeug's, SQLAlchemy's statements with their
parameters, the Stripe SDK's) while it drives a real path, then looks for the secret in everything a person
or a log file could see: the captured log text, the response bodies, stored error texts and emails.
"""
import hashlib
import hmac
import json
import logging
import secrets
import time
import urllib.request

import pytest

from portal.auth.models import ApiToken
from portal.billing import stripe_gateway
from portal.documents.services import issue_document_link
from portal.log_redaction import MASK, redact
from portal.payments import tasks
from portal.payments.models import EventStatus, WebhookEvent
from portal.payments.services import store_event
from tests import factories
from tests.fixtures.billing import billed_record

STRIPE_KEY = "sk_test_" + secrets.token_hex(16)
WRONG_STRIPE_KEY = "sk_live_" + secrets.token_hex(16)  # the sandbox refuses live keys with a 401
WEBHOOK_SECRET = "whsec_" + secrets.token_hex(16)
WRONG_PASSWORD = "Wrong-Horse-" + secrets.token_hex(4)


@pytest.fixture
def logs(app, db, caplog):
    """Every logger at DEBUG, the app's and SQLAlchemy's statements included, for the length of the test."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger=app.logger.name)
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    db.session.commit()  # SQLAlchemy decides to log per connection: start on a fresh one
    return caplog


@pytest.fixture
def configured(app):
    """The app holding a Stripe key and a webhook secret, as production does."""
    saved = {key: app.config.get(key) for key in ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "PROPAGATE_EXCEPTIONS")}
    app.config.update(STRIPE_SECRET_KEY=STRIPE_KEY, STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET)
    app.extensions.pop("closeout_stripe", None)
    yield app
    app.config.update(saved)
    app.extensions.pop("closeout_stripe", None)


def everything_logged(caplog):
    """The captured log as a handler prints it, tracebacks included, and each record's own message."""
    return caplog.text + "\n".join(record.getMessage() for record in caplog.records)


def assert_absent(secret, *texts):
    for text in texts:
        assert secret not in text


def test_sign_ins_never_log_or_echo_the_password(app, db, logs, office):
    client = app.test_client()
    wrong = client.post_form("/login", {"email": office.email, "password": WRONG_PASSWORD})
    right = client.post_form("/login", {"email": office.email, "password": factories.PASSWORD})
    assert wrong.status_code == 401 and right.status_code == 302
    assert any(record.name.startswith("sqlalchemy.engine") for record in logs.records)  # statements were logged
    for password in (WRONG_PASSWORD, factories.PASSWORD):
        assert_absent(password, everything_logged(logs), wrong.get_data(as_text=True))


def test_a_bad_webhook_signature_logs_no_secret(app, db, logs, configured):
    payload = json.dumps({"id": "evt_bad", "type": "invoice.paid", "created": int(time.time())}).encode()
    timestamp = int(time.time())
    wrong = hmac.new(b"whsec_not_ours_at_all", f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    response = app.test_client().post("/webhooks/stripe", data=payload, content_type="application/json",
                                      headers={"Stripe-Signature": f"t={timestamp},v1={wrong}"})
    assert response.status_code == 400
    assert db.session.scalar(db.select(db.func.count()).select_from(WebhookEvent)) == 0
    assert_absent(WEBHOOK_SECRET, everything_logged(logs), response.get_data(as_text=True))


def test_an_unhandled_error_shows_and_logs_no_secret(app, db, logs, configured, login, office, monkeypatch):
    """A library that puts config into its exception text: the 500 page says nothing, the log is masked."""
    from portal.office import views

    def explode(text=""):
        raise RuntimeError(f"cannot connect with key={STRIPE_KEY} secret {WEBHOOK_SECRET}")

    client = login(office)
    monkeypatch.setattr(views, "search_clients", explode)
    app.config["PROPAGATE_EXCEPTIONS"] = False  # answer as production does, with the 500 page
    response = client.get("/office/clients")
    db.session.rollback()
    body = response.get_data(as_text=True)
    assert response.status_code == 500 and "Something went wrong on our side" in body
    logged = everything_logged(logs)
    assert "Exception on /office/clients" in logged and "RuntimeError: cannot connect with key=" in logged
    assert MASK in logged
    for secret in (STRIPE_KEY, WEBHOOK_SECRET, "RuntimeError"):
        assert_absent(secret, body)
    for secret in (STRIPE_KEY, WEBHOOK_SECRET):
        assert_absent(secret, logged)


def test_a_stripe_auth_error_reaches_no_log_page_or_alert_email(app, db, logs, login, office, stripe_sandbox,
                                                                  smtp_server):
    """A wrong Stripe key: the failed event, its traceback, the issues page and the owner's alert hold no key."""
    saved = {key: app.config.get(key) for key in ("STRIPE_API_BASE", "STRIPE_SECRET_KEY", "SMTP_HOST", "SMTP_PORT",
                                                  "ALERT_EMAIL")}
    app.config.update(STRIPE_API_BASE=stripe_sandbox.url, STRIPE_SECRET_KEY=WRONG_STRIPE_KEY,
                      SMTP_HOST=smtp_server.host, SMTP_PORT=smtp_server.port, ALERT_EMAIL="owner@closeout.test")
    app.extensions.pop("closeout_stripe", None)
    logging.getLogger("stripe").setLevel(logging.DEBUG)
    try:
        with pytest.raises(stripe_gateway.StripeRefused) as refused:
            stripe_gateway.retrieve_customer("cus_nobody")
        billed = billed_record()
        billed.record.stripe_invoice_id = "in_secret_test"
        db.session.commit()
        # A payment without our metadata: processing must ask Stripe for its invoice, with the wrong key.
        payload = {"id": "evt_auth", "type": "payment_intent.processing", "created": int(time.time()),
                   "data": {"object": {"id": "pi_auth", "object": "payment_intent", "metadata": {}}}}
        row_id = store_event(payload["id"], payload["type"], payload["created"], payload, received_via="webhook")
        db.session.commit()
        with pytest.raises(stripe_gateway.StripeRefused):
            tasks.process_webhook_event(row_id)
        db.session.expire_all()
        event = db.session.get(WebhookEvent, row_id)
        page = login(office).get("/webhooks/issues").get_data(as_text=True)
    finally:
        app.config.update(saved)
        app.extensions.pop("closeout_stripe", None)
        logging.getLogger("stripe").setLevel(logging.NOTSET)
    assert "401" in str(refused.value) or "Invalid API Key" in str(refused.value)
    assert event.status == EventStatus.FAILED and "Invalid API Key" in event.error and "Traceback" in event.traceback
    assert "Invalid API Key" in page
    emails = [message.as_string() for message in smtp_server.messages]
    assert emails and "Stripe events are failing" in emails[0]
    assert_absent(WRONG_STRIPE_KEY, str(refused.value), event.error, event.traceback, page, everything_logged(logs),
                  *emails)


def test_api_bearer_tokens_are_not_logged(app, db, logs):
    token, raw = ApiToken.issue("hygiene")
    db.session.add(token)
    db.session.commit()
    response = app.test_client().get("/api/v1/jobs", headers={"Authorization": f"Bearer {raw}"})
    refused = app.test_client().get("/api/v1/jobs", headers={"Authorization": f"Bearer {raw}x"})
    assert response.status_code == 200 and refused.status_code == 401
    assert_absent(raw, everything_logged(logs), refused.get_data(as_text=True))


def test_document_tokens_are_masked_in_the_access_log(app, db, logs, live_server):
    """werkzeug (and gunicorn) log each request line; a customer's /d/<token> keeps only its path there."""
    billed = billed_record()
    token = issue_document_link(billed.record.trigger)
    db.session.commit()
    with urllib.request.urlopen(f"{live_server.url}/d/{token}") as response:
        assert response.status == 200 and response.read() == billed.proof
    access = [record.getMessage() for record in logs.records if record.name == "werkzeug"]
    assert any(f"GET /d/{MASK}" in line and " 200 " in line for line in access), access
    assert_absent(token, everything_logged(logs))


@pytest.mark.parametrize("line, secret", [
    ('10.0.0.1 - - [27/Nov/2026:14:00:00 +0000] "GET /d/{secret} HTTP/1.1" 200 5120', "A" * 43),
    ("Authorization: Bearer {secret}", "co_" + "b" * 43),
    ("POST /login password={secret}&email=a@b.test", "hunter2-hunter2"),
    ("stripe key {secret} refused", "rk_live_" + "c" * 24),
    ("signing with {secret}", "whsec_" + "d" * 32),
])
def test_every_logger_masks_secret_shapes(logs, line, secret):
    """gunicorn's access log, a header dump, a form dump: masked whatever logger writes them."""
    for name in ("gunicorn.access", "rq.worker", "portal.anything"):
        logging.getLogger(name).warning(line.format(secret=secret))
    assert len(logs.records) == 3
    assert_absent(secret, everything_logged(logs))
    assert redact(line.format(secret=secret)) == line.format(secret=MASK)
