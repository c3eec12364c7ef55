"""The JSON API under /api/v1: tokens, clients, jobs, completion, and the error shape."""
from datetime import timedelta

import pytest
from sqlalchemy import event, func, select, update

from portal.audit.models import AuditEntry, Source
from portal.audit.services import Actor
from portal.auth.models import ApiToken
from portal.billing.models import BillingRecord, BillingStatus, BillingTrigger, RecordKind, TriggerStatus
from portal.clients.models import Client
from portal.jobs.models import Job, JobLineItem
from portal.jobs.services import complete_job
from portal.timeutil import utcnow
from tests import factories


class ApiClient:
    """A test client that sends one bearer token with every request."""

    def __init__(self, app, raw):
        self.client = app.test_client()
        self.headers = {"Authorization": f"Bearer {raw}"}

    def open(self, method, url, **kwargs):
        return self.client.open(url, method=method, headers=self.headers, **kwargs)

    def get(self, url, **kwargs):
        return self.open("GET", url, **kwargs)

    def post(self, url, **kwargs):
        return self.open("POST", url, **kwargs)


def issue_token(db, name="ticketing"):
    token, raw = ApiToken.issue(name)
    db.session.add(token)
    db.session.commit()
    return token, raw


@pytest.fixture
def token_and_raw(db):
    return issue_token(db)


@pytest.fixture
def api(app, token_and_raw):
    return ApiClient(app, token_and_raw[1])


def count(db, model, *where):
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


# --- Authentication -------------------------------------------------------------------------------

@pytest.mark.parametrize("header", [None, "Bearer", "Bearer co_not-a-real-token", "Basic dXNlcjpwYXNz"])
def test_requests_without_a_valid_token_are_refused(client, db, header):
    headers = {"Authorization": header} if header else {}
    response = client.get("/api/v1/jobs", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["status"] == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_revoked_token_is_refused(app, db):
    token, raw = issue_token(db)
    assert ApiClient(app, raw).get("/api/v1/clients").status_code == 200
    token.revoked_at = utcnow()
    db.session.commit()
    response = ApiClient(app, raw).get("/api/v1/clients")
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_a_signed_in_session_does_not_authenticate_the_api(login, office):
    browser = login(office)
    response = browser.get("/api/v1/jobs")
    assert response.status_code == 401
    assert browser.post("/api/v1/clients", json={"name": "Sneaky"}).status_code == 401


def test_using_a_token_records_when(api, db, token_and_raw):
    token, _ = token_and_raw
    assert token.last_used_at is None
    api.get("/api/v1/clients")
    db.session.refresh(token)
    assert token.last_used_at is not None


# --- Clients --------------------------------------------------------------------------------------

def test_create_a_client_with_policy_and_sites(api, db, token_and_raw):
    response = api.post("/api/v1/clients", json={
        "name": "Harbor View Property Management",
        "billing_emails": ["AP@HarborView.example.com"],
        "phone": "555-0142",
        "billing_mode": "payment_link",
        "send_mode": "auto",
        "batching": "weekly",
        "days_until_due": 15,
        "tax_exempt": True,
        "sites": [{"name": "Building A", "address": "1 Pier Rd", "access_notes": "Key in lockbox 4412"}],
    })
    assert response.status_code == 201
    body = response.get_json()
    assert response.headers["Location"].endswith(f"/api/v1/clients/{body['id']}")
    assert body["billing_emails"] == ["AP@harborview.example.com"]
    assert (body["billing_mode"], body["send_mode"], body["batching"]) == ("payment_link", "auto", "weekly")
    assert body["days_until_due"] == 15 and body["tax_exempt"] is True and body["allow_no_charge"] is False
    assert [site["name"] for site in body["sites"]] == ["Building A"]

    fetched = api.get(f"/api/v1/clients/{body['id']}").get_json()
    assert fetched == body
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "client.created"))
    assert entry.source == Source.API_TOKEN and entry.actor_ref == str(token_and_raw[0].id)
    assert entry.entity_id == body["id"]


def test_client_list_pages_by_id(api, db):
    ids = [factories.client().id for _ in range(3)]
    first = api.get("/api/v1/clients?limit=2").get_json()
    assert [row["id"] for row in first["data"]] == ids[:2]
    assert first["has_more"] is True and first["next_cursor"] == ids[1]
    second = api.get(f"/api/v1/clients?limit=2&starting_after={first['next_cursor']}").get_json()
    assert [row["id"] for row in second["data"]] == ids[2:]
    assert second["has_more"] is False and second["next_cursor"] is None
    assert api.get(f"/api/v1/clients?cursor={ids[0]}").get_json()["data"][0]["id"] == ids[1]


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "limit=ten", "starting_after=-1", "page=2"])
def test_bad_page_parameters_are_400(api, db, query):
    response = api.get(f"/api/v1/clients?{query}")
    assert response.status_code == 400
    assert response.get_json()["error"]["fields"]


def test_unusable_client_values_are_422_with_fields(api, db):
    response = api.post("/api/v1/clients", json={
        "name": "Lakeside Schools", "billing_mode": "carrier_pigeon", "days_until_due": 400,
        "billing_emails": ["accounts@lakeside.example.com", "not-an-email"], "currency": "dollars",
    })
    assert response.status_code == 422
    fields = response.get_json()["error"]["fields"]
    assert set(fields) == {"billing_mode", "days_until_due", "billing_emails", "currency"}
    assert count(db, Client) == 0
    no_email = api.post("/api/v1/clients", json={"name": "Lakeside Schools", "billing_emails": []})
    assert no_email.status_code == 422 and set(no_email.get_json()["error"]["fields"]) == {"billing_emails"}


def test_malformed_client_requests_are_400_with_fields(api, db):
    response = api.post("/api/v1/clients", json={"name": 5, "billing_emails": "ap@x.example.com", "colour": "red",
                                                 "sites": [{"name": "No address"}]})
    assert response.status_code == 400
    assert response.get_json()["error"]["fields"] == {
        "name": "must be a string", "billing_emails": "must be a list of email addresses",
        "colour": "unknown field", "sites[0].address": "required",
    }
    assert api.post("/api/v1/clients", json={}).get_json()["error"]["fields"] == {
        "name": "required", "billing_emails": "required"}
    not_json = api.post("/api/v1/clients", data="{name:", content_type="application/json")
    assert not_json.status_code == 400 and not_json.get_json()["error"]["fields"] == {"body": "not valid JSON"}
    assert api.post("/api/v1/clients", json=["a list"]).status_code == 400
    assert count(db, Client) == 0


# --- Creating jobs --------------------------------------------------------------------------------

def test_create_a_job_with_custom_and_template_lines(api, db, crew):
    client_row = factories.client()
    site = factories.site(client_row, name="Unit 4B")
    labor = factories.template("Labor", unit_amount=8500, unit="hour")
    response = api.post("/api/v1/jobs", json={
        "client_id": client_row.id, "site_id": site.id, "external_ref": "ZD-4821",
        "scope": "Replace the water heater", "crew_emails": [crew.email.upper()],
        "scheduled_start": "2025-03-03T09:00:00-05:00", "scheduled_end": "2025-03-03T12:00:00-05:00",
        "line_items": [
            {"description": "Fittings", "quantity": "3", "unit_amount": 3333},
            {"template_id": labor.id, "quantity": 2.5},
            {"description": "Sealant", "quantity": 1.333, "unit_amount": 1000, "unit": "tube"},
        ],
    })
    assert response.status_code == 201, response.get_json()
    job = response.get_json()
    assert response.headers["Location"].endswith(f"/api/v1/jobs/{job['id']}")
    assert job["work_status"] == "scheduled"  # priced from the ticket, but nobody has started
    assert job["billing_status"] == "not_billed" and job["billing"] is None
    assert job["site"] == {"id": site.id, "name": "Unit 4B", "address": site.address}
    assert job["crew"] == [{"id": crew.id, "name": crew.name}]
    assert (job["scheduled_start"], job["scheduled_end"]) == ("2025-03-03T14:00:00Z", "2025-03-03T17:00:00Z")
    assert [(line["description"], line["quantity"], line["unit_amount"], line["amount"]) for line in job["line_items"]] == [
        ("Fittings", "3.000", 3333, 9999), ("Labor", "2.500", 8500, 21250), ("Sealant", "1.333", 1000, 1333)]
    assert job["totals"] == {"subtotal": 9999 + 21250 + 1333, "tax": 0, "total": 32582}
    assert job["currency"] == "usd"


def test_job_totals_include_tax_per_line(api, app, db):
    app.config.update(SALES_TAX_PERCENT="8.25")
    client_row = factories.client()
    response = api.post("/api/v1/jobs", json={"client_id": client_row.id, "line_items": [
        {"description": "Capacitor", "quantity": "1", "unit_amount": 6800, "taxable": True},
        {"description": "Labor", "quantity": "1", "unit_amount": 9500},
    ]})
    job = response.get_json()
    assert [line["tax_amount"] for line in job["line_items"]] == [561, 0]  # 6800 × 8.25% = 561.0
    assert job["totals"] == {"subtotal": 16300, "tax": 561, "total": 16861}


@pytest.mark.parametrize("payload_for, field", [
    (lambda ids: {"client_id": 999}, "client_id"),
    (lambda ids: {"client_id": ids["client"], "site_id": ids["other_site"]}, "site_id"),
    (lambda ids: {"client_id": ids["client"], "site_id": 999}, "site_id"),
    (lambda ids: {"client_id": ids["client"], "crew_ids": [ids["office"]]}, "crew_ids"),
    (lambda ids: {"client_id": ids["client"], "line_items": [{"template_id": 999}]}, "line_items[0].template_id"),
    (lambda ids: {"client_id": ids["client"], "line_items": [{"description": "Labor", "quantity": "-1", "unit_amount": 100}]},
     "line_items[0].quantity"),
    (lambda ids: {"client_id": ids["client"], "scheduled_start": "2025-03-03T12:00:00Z",
                  "scheduled_end": "2025-03-03T09:00:00Z"}, "scheduled_end"),
])
def test_unusable_job_values_are_422_and_create_nothing(api, db, office, payload_for, field):
    client_row = factories.client()
    other_site = factories.site(factories.client())
    response = api.post("/api/v1/jobs", json=payload_for({"client": client_row.id, "other_site": other_site.id,
                                                          "office": office.id}))
    assert response.status_code == 422
    assert field in response.get_json()["error"]["fields"]
    assert count(db, Job) == 0 and count(db, JobLineItem) == 0


def test_malformed_job_requests_are_400(api, db):
    client_row = factories.client()
    response = api.post("/api/v1/jobs", json={
        "client_id": str(client_row.id), "scheduled_start": "tomorrow morning",
        "line_items": [{"description": "Labor", "quantity": True, "unit_amount": "85.00"}, {"quantity": 1}],
    })
    assert response.status_code == 400
    assert set(response.get_json()["error"]["fields"]) == {
        "client_id", "scheduled_start", "line_items[0].quantity", "line_items[0].unit_amount",
        "line_items[1].description", "line_items[1].unit_amount"}
    naive = api.post("/api/v1/jobs", json={"client_id": client_row.id, "scheduled_start": "2025-03-03T09:00:00"})
    assert "UTC offset" in naive.get_json()["error"]["fields"]["scheduled_start"]
    assert count(db, Job) == 0


def test_a_repeated_external_ref_is_409_with_the_existing_job(api, db):
    client_row = factories.client()
    first = api.post("/api/v1/jobs", json={"client_id": client_row.id, "external_ref": "ZD-1"}).get_json()
    again = api.post("/api/v1/jobs", json={"client_id": client_row.id, "external_ref": "ZD-1"})
    assert again.status_code == 409
    assert again.get_json()["error"]["existing_job_id"] == first["id"]
    assert again.get_json()["error"]["fields"] == {"external_ref": "already used for this client"}
    other_client = factories.client()
    assert api.post("/api/v1/jobs", json={"client_id": other_client.id, "external_ref": "ZD-1"}).status_code == 201
    assert count(db, Job) == 2


# --- Reading jobs ---------------------------------------------------------------------------------

def test_get_a_job_shows_its_live_bill(api, db, crew):
    job = factories.job(crew=[crew], items=[("Labor", "1", 8500)])
    complete_job(job, by=Actor.for_user(crew))
    db.session.add(BillingRecord(job=job, kind=RecordKind.INVOICE, status=BillingStatus.SENT, currency="usd",
                                 subtotal=8500, total=8500, stripe_invoice_id="in_123",
                                 hosted_url="https://invoice.stripe.com/i/acct/test_123", invoice_number="CO-0001",
                                 due_at=utcnow() + timedelta(days=30)))
    db.session.commit()

    body = api.get(f"/api/v1/jobs/{job.id}").get_json()
    assert body["work_status"] == "completed"
    assert body["completed_by"] == {"id": crew.id, "name": crew.name}
    assert body["completed_at"].endswith("Z")
    assert body["billing"]["kind"] == "invoice" and body["billing"]["status"] == "sent"
    assert body["billing"]["stripe_invoice_id"] == "in_123"
    assert body["billing"]["hosted_url"] == "https://invoice.stripe.com/i/acct/test_123"
    assert body["billing"]["stripe_payment_link_id"] is None
    assert set(body) >= {"id", "number", "client", "site", "scope", "customer_notes", "external_ref", "scheduled_start",
                         "scheduled_end", "crew", "work_status", "billing_status", "no_charge_reason", "currency",
                         "line_items", "totals", "billing", "created_at", "updated_at"}


def test_unknown_jobs_urls_and_methods_answer_json(api, db):
    for url, method, status in [("/api/v1/jobs/999", "GET", 404), ("/api/v1/jobs/99999999999999", "GET", 404),
                                ("/api/v1/clients/999", "GET", 404), ("/api/v1/jobs/999/complete", "POST", 404),
                                ("/api/v1/nothing-here", "GET", 404), ("/api/v1/jobs/1", "DELETE", 405),
                                ("/api/v1/jobs/1/complete", "GET", 405), ("/api/v1/clients", "PUT", 405)]:
        response = api.open(method, url)
        assert response.status_code == status, (method, url)
        assert response.is_json and response.get_json()["error"]["status"] == status


def test_list_jobs_filters(api, db, crew):
    weekly = factories.client(batching="weekly")
    scheduled = factories.job(crew=[crew], external_ref="ZD-7")
    pending = factories.job(crew=[crew], items=[("Labor", "1", 8500)])
    ready = factories.job(weekly, crew=[crew], items=[("Labor", "1", 8500)])
    for job in (pending, ready):
        complete_job(job, by=Actor.for_user(crew))
    db.session.commit()
    long_ago = utcnow() - timedelta(days=30)
    db.session.execute(update(Job).where(Job.id == scheduled.id).values(updated_at=long_ago))
    db.session.commit()

    def ids(query):
        response = api.get(f"/api/v1/jobs?{query}")
        assert response.status_code == 200, response.get_json()
        return [row["id"] for row in response.get_json()["data"]]

    assert ids("") == [scheduled.id, pending.id, ready.id]
    assert ids("work_status=completed") == [pending.id, ready.id]
    assert ids("status=scheduled") == [scheduled.id]
    assert ids("billing_status=ready_to_bill") == [ready.id]
    assert ids("work_status=completed&billing_status=pending") == [pending.id]
    since = (utcnow() - timedelta(days=1)).isoformat()  # "+00:00" unencoded: the + arrives as a space
    assert ids(f"updated_since={since}") == [pending.id, ready.id]
    assert ids("updated_since=2000-01-01T00:00:00Z") == [scheduled.id, pending.id, ready.id]
    assert ids(f"client_id={weekly.id}") == [ready.id]
    assert ids("external_ref=ZD-7") == [scheduled.id]
    assert ids(f"limit=1&starting_after={scheduled.id}") == [pending.id]


@pytest.mark.parametrize("query, field", [
    ("updated_since=yesterday", "updated_since"), ("updated_since=2025-03-01T00:00:00", "updated_since"),
    ("work_status=done", "work_status"), ("billing_status=owed", "billing_status"),
    ("status=completed&work_status=scheduled", "status"), ("client=3", "client"),
])
def test_bad_job_filters_are_400(api, db, query, field):
    response = api.get(f"/api/v1/jobs?{query}")
    assert response.status_code == 400
    assert field in response.get_json()["error"]["fields"]


def test_the_job_list_loads_in_a_fixed_number_of_queries(api, app, db, crew):
    def statements_for_list():
        statements = []

        def count_statement(*args):
            statements.append(args)

        engine = db.engine
        event.listen(engine, "before_cursor_execute", count_statement)
        try:
            assert api.get("/api/v1/jobs").status_code == 200
        finally:
            event.remove(engine, "before_cursor_execute", count_statement)
        return len(statements)

    api.get("/api/v1/clients")  # the token's first use writes last_used_at; keep that out of the count
    factories.job(crew=[crew], items=[("Labor", "1", 8500)])
    one = statements_for_list()
    for _ in range(5):
        factories.job(factories.client(), site=None, crew=[crew], items=[("Labor", "1", 8500), ("Parts", "2", 100)])
    assert statements_for_list() == one


# --- Completing jobs ------------------------------------------------------------------------------

def test_completing_through_the_api_records_the_billing_trigger(api, db, crew, token_and_raw):
    job = factories.job(crew=[crew], items=[("Labor", "2.5", 8500)])
    response = api.post(f"/api/v1/jobs/{job.id}/complete", json={
        "line_items": [{"description": "Parts", "quantity": "3", "unit_amount": 3333}]})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["work_status"] == "completed" and body["billing_status"] == "pending"
    assert body["totals"]["total"] == 21250 + 9999 and body["completed_at"] is not None
    triggers = db.session.scalars(select(BillingTrigger).where(BillingTrigger.job_id == job.id)).all()
    assert [trigger.status for trigger in triggers] == [TriggerStatus.PENDING]
    entries = db.session.scalars(select(AuditEntry).where(AuditEntry.job_id == job.id,
                                                          AuditEntry.source == Source.API_TOKEN)).all()
    actions = [entry.action for entry in entries]
    assert {"line_item.added", "job.completed", "billing.triggered"} <= set(actions)
    assert {entry.actor_ref for entry in entries} == {str(token_and_raw[0].id)}


def test_completing_twice_is_409_and_adds_nothing(api, db, crew):
    job = factories.job(crew=[crew], items=[("Labor", "1", 8500)])
    assert api.post(f"/api/v1/jobs/{job.id}/complete").status_code == 200
    again = api.post(f"/api/v1/jobs/{job.id}/complete", json={
        "line_items": [{"description": "Extra", "quantity": "1", "unit_amount": 100}]})
    assert again.status_code == 409
    assert again.get_json()["error"]["message"] == "This job is already completed."
    assert count(db, BillingTrigger) == 1
    assert count(db, JobLineItem) == 1


def test_a_negative_quantity_is_422_and_nothing_is_added(api, db, crew):
    job = factories.job(crew=[crew], items=[("Labor", "1", 8500)])
    response = api.post(f"/api/v1/jobs/{job.id}/complete", json={"line_items": [
        {"description": "Parts", "quantity": "2", "unit_amount": 500},
        {"description": "Refund?", "quantity": "-1", "unit_amount": 500},
    ]})
    assert response.status_code == 422
    assert response.get_json()["error"]["fields"] == {"line_items[1].quantity": "quantity must be greater than zero"}
    assert count(db, JobLineItem) == 1 and count(db, BillingTrigger) == 0
    body = api.get(f"/api/v1/jobs/{job.id}").get_json()
    assert (body["work_status"], body["billing_status"]) == ("in_progress", "not_billed")
    assert body["totals"]["total"] == 8500


@pytest.mark.parametrize("unit_amount", [85.5, 85.0, "8500"])
def test_money_must_be_an_integer_of_cents(api, db, crew, unit_amount):
    job = factories.job(crew=[crew], items=[("Labor", "1", 8500)])
    response = api.post(f"/api/v1/jobs/{job.id}/complete", json={"line_items": [
        {"description": "Parts", "quantity": "1", "unit_amount": unit_amount}]})
    assert response.status_code == 400
    assert "whole number of cents" in response.get_json()["error"]["fields"]["line_items[0].unit_amount"]
    assert count(db, JobLineItem) == 1 and count(db, BillingTrigger) == 0


def test_completing_without_lines_needs_a_no_charge_client(api, db, crew):
    billable = factories.job(crew=[crew])
    response = api.post(f"/api/v1/jobs/{billable.id}/complete", json={})
    assert response.status_code == 422
    assert response.get_json()["error"]["fields"] == {"line_items": "required"}
    assert api.get(f"/api/v1/jobs/{billable.id}").get_json()["work_status"] == "scheduled"

    goodwill = factories.job(factories.client(allow_no_charge=True), crew=[crew])
    response = api.post(f"/api/v1/jobs/{goodwill.id}/complete", json={"no_charge_reason": "Warranty callback"})
    assert response.status_code == 200
    body = response.get_json()
    assert (body["billing_status"], body["no_charge_reason"]) == ("no_charge", "Warranty callback")
    assert count(db, BillingTrigger) == 0
