"""CSRF on every state-changing route (issue 8), generated from the app's URL map.

Every POST, PUT, PATCH and DELETE route is sent, by a signed-in user of a role allowed there, as
a form without a token, as an htmx request without its X-CSRFToken header, as JSON, and with a
real token from another browser's session: each must be refused with 400 before the view runs,
and the refusal must be Flask-WTF's (its log line), not some other 400. The only exempt routes
are the ones declared below, and the app must exempt exactly those.
"""
import logging
import uuid

import pytest
from sqlalchemy import func, select
from werkzeug.routing import FloatConverter, IntegerConverter, UUIDConverter

from portal.audit.models import AuditEntry
from portal.extensions import csrf
from tests import factories
from tests.test_authorization import API, PUBLIC_TOKEN, access_for

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
# Declared exemptions: Stripe signs its webhooks (no cookie, no token); the JSON API takes only
# bearer tokens, which a cross-site page cannot make a browser send.
EXEMPT_ENDPOINTS = {"payments.stripe_webhook"}
EXEMPT_PREFIXES = ("api.",)
ROLE_PREFERENCE = ("anonymous", "office", "owner", "crew", "partner", "other_crew", "other_partner")
CSRF_LOGGER = "flask_wtf.csrf"


def declared_exempt(endpoint):
    return endpoint in EXEMPT_ENDPOINTS or endpoint.startswith(EXEMPT_PREFIXES)


def state_changing_routes(app):
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        for method in sorted(rule.methods & STATE_CHANGING):
            yield rule, method


def placeholder_url(rule):
    """The rule with a value of the right type in every variable: CSRF is checked before any row is looked up."""
    values = {}
    for name, converter in rule._converters.items():
        if isinstance(converter, IntegerConverter):
            values[name] = 1
        elif isinstance(converter, FloatConverter):
            values[name] = 1.0
        elif isinstance(converter, UUIDConverter):
            values[name] = uuid.uuid4()
        else:
            values[name] = "x" * 43
    return rule.build(values, append_unknown=False)[1]


def role_for(endpoint):
    """A role allowed on the endpoint, so that what refuses the request is the missing token, not the role."""
    expected = access_for(endpoint)
    if expected in (API, PUBLIC_TOKEN) or expected is None:
        return "anonymous"
    return next(role for role in ROLE_PREFERENCE if role in expected)


@pytest.fixture
def browsers(app, login, crew, other_crew, office, owner, partner):
    """One signed-in browser per role, plus a second office browser whose token is real but not theirs."""
    users = {"crew": crew, "other_crew": other_crew, "office": office, "owner": owner, "partner": partner}
    signed_in = {role: login(user) for role, user in users.items()}
    signed_in["anonymous"] = app.test_client()
    stranger = login(factories.user("office"))
    return signed_in, stranger.csrf_token()


def audit_count(db):
    return db.session.scalar(select(func.count()).select_from(AuditEntry))


def test_the_app_exempts_exactly_the_declared_routes(app):
    wrong = []
    for rule, method in state_changing_routes(app):
        with app.test_request_context(placeholder_url(rule), method=method):
            if csrf._is_exempt() != declared_exempt(rule.endpoint):
                wrong.append(f"{method} {rule.rule} ({rule.endpoint})")
    assert wrong == [], "CSRF exemptions differ from the declared ones: " + ", ".join(wrong)


def test_every_state_changing_route_refuses_a_request_without_a_valid_token(app, db, browsers, caplog):
    signed_in, strangers_token = browsers
    before = audit_count(db)
    failures, checked = [], 0
    for rule, method in state_changing_routes(app):
        if declared_exempt(rule.endpoint):
            continue
        url, client = placeholder_url(rule), signed_in[role_for(rule.endpoint)]
        attempts = {
            "form without a token": dict(data={"note": "x"}),
            "htmx without X-CSRFToken": dict(data={"note": "x"}, headers={"HX-Request": "true"}),
            "JSON without a token": dict(json={"note": "x"}),
            "another session's token": dict(data={"note": "x", "csrf_token": strangers_token},
                                            headers={"HX-Request": "true", "X-CSRFToken": strangers_token}),
            "a forged token": dict(data={"csrf_token": "IjAwMDAi.aaaa.bbbb"}, headers={"HX-Request": "true"}),
        }
        for name, kwargs in attempts.items():
            caplog.clear()
            with caplog.at_level(logging.INFO, logger=CSRF_LOGGER):
                response = client.open(url, method=method, **kwargs)
                response.close()
            refused_by_csrf = any(record.name == CSRF_LOGGER for record in caplog.records)
            checked += 1
            if response.status_code != 400 or not refused_by_csrf:
                failures.append(f"{method} {rule.rule} ({name}): {response.status_code}, csrf refusal: {refused_by_csrf}")
    assert failures == [], "\n".join(failures)
    assert checked >= 5 * 20  # every route above, five ways (at the time of writing: 20+ routes)
    assert audit_count(db) == before  # nothing was changed by any of them


def test_the_same_requests_with_the_token_get_through(app, db, login, crew):
    """The control: the harness above is not refusing everything. A real token opens the same doors."""
    job = factories.job(crew=[crew], items=[("Labor", "1", 8500)])
    browser = login(crew)

    note = browser.htmx("POST", f"/crew/jobs/{job.id}/notes", data={"body": "Checked the valve"})
    signed_out = browser.post_form("/logout")

    assert note.status_code == 200 and "Checked the valve" in note.get_data(as_text=True)
    assert signed_out.status_code == 302


def test_exempt_routes_answer_without_a_token_but_only_to_their_own_credential(app, client):
    webhook = client.post("/webhooks/stripe", data=b"{}", headers={"Content-Type": "application/json"})
    api = client.post("/api/v1/clients", json={"name": "Sneaky"})

    assert webhook.status_code == 400  # refused for its missing Stripe-Signature, not for CSRF
    assert api.status_code == 401  # no bearer token
