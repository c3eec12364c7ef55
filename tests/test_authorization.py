"""The authorization matrix: every route in the app's URL map × every role.

A route with no entry in ACCESS fails the test, so a new route cannot ship without a
decision about who may reach it.
"""
import io
import uuid

import pytest
from PIL import Image
from werkzeug.datastructures import FileStorage

from portal.audit.services import Actor
from portal.auth.models import ApiToken
from portal.extensions import db
from portal.photos.services import add_photo
from tests import factories

ROLES = ("anonymous", "crew", "other_crew", "office", "owner", "partner", "other_partner")

# Who reaches each endpoint. "crew" is the crew member assigned to the job in the URL; "partner" is the
# partner whose payout is in the URL, "other_partner" another partner with rows of its own.
STAFF = {"office", "owner"}
JOB_CREW = {"crew"}
JOB_VIEWERS = {"crew", "office", "owner"}
EVERYONE = set(ROLES)
SIGNED_IN = set(ROLES) - {"anonymous"}
API = "api token"  # bearer token only; every role's session gets 401
PUBLIC_TOKEN = "public token"  # customers' links: anyone, but only with a valid token

ACCESS = {
    "static": EVERYONE,
    "auth.index": SIGNED_IN,  # anonymous visitors are sent to sign in
    "auth.login": EVERYONE,
    "auth.logout": SIGNED_IN,
    "documents.proof_pdf": PUBLIC_TOKEN,
    "photos.original": JOB_VIEWERS,
    "photos.thumbnail": JOB_VIEWERS,
    "photos.web": JOB_VIEWERS,
}
ACCESS.update({endpoint: JOB_CREW for endpoint in (
    "crew.job", "crew.confirm_complete", "crew.complete", "crew.add_item", "crew.remove_item", "crew.add_note",
    "crew.add_photos", "crew.remove_photo")})
ACCESS["crew.my_jobs"] = {"crew", "other_crew"}
# Issue 9: the manifest and service worker install the crew app and hold nothing of anyone's.
ACCESS.update({endpoint: EVERYONE for endpoint in ("crew.manifest", "crew.service_worker")})
# Issue 6: partner setup, attribution and the payouts ledger are staff screens under /office (their own
# blueprint, so listed here); the portal shows each partner their own rows, and another partner's payout is a 404.
ACCESS.update({endpoint: STAFF for endpoint in (
    "partners.index", "partners.new_partner", "partners.partner", "partners.edit_partner",
    "partners.start_partner_onboarding", "partners.refresh_partner_account", "partners.add_client_referral",
    "partners.end_client_referral", "partners.add_job_referral", "partners.end_job_referral", "partners.ledger",
    "partners.ledger_csv", "partners.retry")})
ACCESS.update({endpoint: {"partner", "other_partner"} for endpoint in (
    "partner.home", "partner.earnings_csv", "partner.set_up_payouts")})
ACCESS["partner.payout"] = {"partner"}
# Payment sync: the receiver is public but signature-checked (unsigned requests get 400, see
# tests/test_webhooks.py); the Webhook issues page and its actions are for staff.
ACCESS["payments.stripe_webhook"] = EVERYONE
# Issue 7: the dashboard for staff (the office sees its operational parts); exports and the audit log: owner.
ACCESS["dashboard.page"] = STAFF
ACCESS.update({endpoint: {"owner"} for endpoint in ("dashboard.exports", "dashboard.export", "dashboard.audit_log")})
ACCESS.update({endpoint: STAFF for endpoint in (
    "payments.webhook_issues", "payments.retry_webhook_event", "payments.ignore_webhook_event")})
ACCESS.update({endpoint: API for endpoint in (
    "api.list_clients", "api.create_client", "api.get_client", "api.list_jobs", "api.create_job", "api.get_job",
    "api.complete_job")})


def access_for(endpoint):
    if endpoint.startswith(("office.", "board.")):  # the live board lives under /office too: staff only
        return STAFF
    return ACCESS.get(endpoint)


def objects_for(crew):
    """One of everything a URL can name, on a job assigned to `crew`."""
    client_row = factories.client()
    site = factories.site(client_row)
    template = factories.template()
    job = factories.job(client_row, crew=[crew], items=[("Labor", "1", 8500)], site=site)
    partner_row = factories.partner()
    referral = factories.referral(partner_row, client_row=client_row)
    payout = factories.payout(partner_row, amount=850, referral_row=referral, job_row=job, status="failed")
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), "teal").save(buffer, "JPEG")
    photo = add_photo(job, FileStorage(io.BytesIO(buffer.getvalue()), "a.jpg"), by=Actor.for_user(crew))
    event_id = failed_webhook_event()
    db.session.commit()
    return {"event_id": event_id, "job_id": job.id, "item_id": job.line_items[0].id, "photo_id": photo.id, "client_id": client_row.id,
            "site_id": site.id, "template_id": template.id, "filename": "closeout.css", "token": "x" * 43,
            "partner_id": partner_row.id, "referral_id": referral.id, "payout_id": payout.id}


def failed_webhook_event():
    """A failed Stripe event for the Webhook issues page's Retry and Ignore."""
    from portal.payments.models import EventStatus, WebhookEvent

    event = WebhookEvent(stripe_event_id=f"evt_matrix_{uuid.uuid4().hex}", type="invoice.paid",
                         payload={}, stripe_created=0, status=EventStatus.FAILED, error="matrix")
    db.session.add(event)
    db.session.flush()
    return event.id


@pytest.fixture
def world(db, crew, other_crew, office, owner, partner, other_partner):
    values = objects_for(crew)
    # The signed-in partners' own rows; the payout in GET URLs is `partner`'s, so `other_partner` must get 404.
    partner_row = factories.partner(partner)
    factories.payout(factories.partner(other_partner), amount=400)
    values["payout_id"] = factories.payout(partner_row, amount=850).id
    users = {"crew": crew, "other_crew": other_crew, "office": office, "owner": owner, "partner": partner,
             "other_partner": other_partner}
    return values, users


def all_routes(app):
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method


def test_every_route_has_an_access_decision(app):
    missing = sorted({rule.endpoint for rule, _ in all_routes(app) if access_for(rule.endpoint) is None})
    assert missing == [], f"routes with no entry in the authorization matrix: {missing}"


def request_as(app, login, users, role, rule, method, values):
    client = app.test_client() if role == "anonymous" else login(users[role])
    url = rule.build(values, append_unknown=False)[1]
    if method == "GET":
        response = client.get(url)
    else:
        response = client.open(url, method=method, data={"csrf_token": client.csrf_token()})
    response.close()
    return response


def is_denied(response, role):
    if role == "anonymous":
        return response.status_code in (302, 401, 404) and (
            response.status_code != 302 or "/login" in response.headers["Location"])
    return response.status_code in (401, 403, 404)


def test_the_matrix(app, login, world):
    values, users = world
    failures = []
    for rule, method in all_routes(app):
        expected = access_for(rule.endpoint)
        if expected in (API, PUBLIC_TOKEN):
            continue  # checked below
        for role in ROLES:
            # A state-changing request may delete or complete what it names: give each its own objects.
            route_values = values if method == "GET" else objects_for(users["crew"])
            response = request_as(app, login, users, role, rule, method, route_values)
            allowed = role in expected
            if allowed == is_denied(response, role):
                failures.append(f"{method} {rule.rule} as {role}: {response.status_code}, expected "
                                f"{'allowed' if allowed else 'denied'}")
    assert failures == [], "\n".join(failures)


def test_api_routes_take_only_bearer_tokens(app, login, world):
    values, users = world
    token, raw = ApiToken.issue("matrix")
    db.session.add(token)
    db.session.commit()
    for rule, method in all_routes(app):
        if access_for(rule.endpoint) != API:
            continue
        url = rule.build(values, append_unknown=False)[1]
        for role in ROLES:
            client = app.test_client() if role == "anonymous" else login(users[role])
            response = client.open(url, method=method, json={})
            assert response.status_code == 401, f"{method} {url} as {role} with a session"
        response = app.test_client().open(url, method=method, json={}, headers={"Authorization": f"Bearer {raw}"})
        assert response.status_code not in (401, 403, 404, 405), f"{method} {url} with a token"


def test_customer_links_need_a_real_token(app, world):
    values, _ = world
    assert app.test_client().get(f"/d/{values['token']}").status_code == 404


def test_crew_cannot_reach_another_crews_job_by_id(app, login, world):
    values, users = world
    client = login(users["other_crew"])
    for url in (f"/crew/jobs/{values['job_id']}", f"/photos/{values['photo_id']}",
                f"/photos/{values['photo_id']}/thumb", f"/crew/jobs/{values['job_id']}/complete"):
        response = client.get(url)
        response.close()
        assert response.status_code == 404, url
    response = client.post_form(f"/crew/jobs/{values['job_id']}/complete")
    assert response.status_code == 404
