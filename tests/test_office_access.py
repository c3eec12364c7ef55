"""Office screens are for office staff and owners only: everyone else gets 404, as if nothing were there."""
import pytest

from portal.clients.models import Client
from portal.jobs.models import Job, LineItemTemplate
from tests import factories

# Every office route, with placeholders filled from the `rows` fixture.
ROUTES = [
    ("GET", "/office/jobs"),
    ("GET", "/office/jobs/new"),
    ("POST", "/office/jobs/new"),
    ("GET", "/office/jobs/site-options?client_id={client}"),
    ("GET", "/office/jobs/{job}"),
    ("GET", "/office/jobs/{job}/edit"),
    ("POST", "/office/jobs/{job}/edit"),
    ("GET", "/office/jobs/{job}/items"),
    ("POST", "/office/jobs/{job}/items"),
    ("POST", "/office/jobs/{job}/items/{item}"),
    ("POST", "/office/jobs/{job}/items/{item}/remove"),
    ("POST", "/office/jobs/{job}/notes"),
    ("POST", "/office/jobs/{job}/complete"),
    ("POST", "/office/jobs/{job}/reopen"),
    ("GET", "/office/jobs/{job}/billing"),
    ("POST", "/office/jobs/{job}/billing/approve"),
    ("POST", "/office/jobs/{job}/billing/void"),
    ("POST", "/office/jobs/{job}/billing/rebill"),
    ("POST", "/office/jobs/{job}/billing/paid-offline"),
    ("POST", "/office/jobs/{job}/billing/no-charge"),
    ("POST", "/office/jobs/{job}/billing/resend"),
    ("POST", "/office/jobs/{job}/billing/retry"),
    ("POST", "/office/jobs/{job}/billing/remind"),
    ("POST", "/office/jobs/{job}/billing/revoke-links"),
    ("GET", "/office/billing/attention"),
    ("GET", "/office/billing/ready"),
    ("POST", "/office/billing/bill-now"),
    ("GET", "/office/clients"),
    ("GET", "/office/clients/new"),
    ("POST", "/office/clients/new"),
    ("GET", "/office/clients/{client}"),
    ("GET", "/office/clients/{client}/edit"),
    ("POST", "/office/clients/{client}/edit"),
    ("POST", "/office/clients/{client}/reminders"),
    ("GET", "/office/clients/{client}/sites/new"),
    ("POST", "/office/clients/{client}/sites/new"),
    ("GET", "/office/clients/{client}/sites/{site}/edit"),
    ("POST", "/office/clients/{client}/sites/{site}/edit"),
    ("GET", "/office/templates"),
    ("GET", "/office/templates/new"),
    ("POST", "/office/templates/new"),
    ("GET", "/office/templates/{template}/edit"),
    ("POST", "/office/templates/{template}/edit"),
    ("POST", "/office/templates/{template}/retire"),
    ("POST", "/office/templates/{template}/restore"),
]


@pytest.fixture
def rows(db, crew):
    client = factories.client(name="Untouched Client")
    job = factories.job(client, crew=[crew], items=[("Labor", "1", 8500)], scope="Untouched scope")
    return {"client": client.id, "site": factories.site(client).id, "job": job.id, "item": job.line_items[0].id,
            "template": factories.template(name="Untouched template").id}


def test_the_route_list_covers_every_office_route(app):
    listed = {(method, url.split("?")[0]) for method, url in ROUTES}
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("office."):
            path = rule.rule.replace("<int:job_id>", "{job}").replace("<int:client_id>", "{client}")
            path = path.replace("<int:site_id>", "{site}").replace("<int:item_id>", "{item}")
            path = path.replace("<int:template_id>", "{template}")
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                assert (method, path) in listed, f"{method} {path} is not in the access matrix"


HIJACK = {"name": "Hijacked", "scope": "Hijacked", "reason": "Hijacked", "body": "Hijacked", "quantity": "9",
          "description": "Hijacked", "unit_amount": "1.00", "billing_emails": "x@example.com", "days_until_due": "1"}


# One test per role walks every route: a test per route would spend a minute creating and truncating rows.
@pytest.mark.parametrize("role", ["crew", "partner"])
def test_crew_and_partners_get_404_on_every_office_route(db, login, rows, role, request):
    browser = login(request.getfixturevalue(role))
    answers = {}
    for method, url in ROUTES:
        url = url.format(**rows)
        if method == "GET":
            response = browser.get(url)
        else:
            response = browser.post_form(url, {**HIJACK, "client_id": str(rows["client"])})
        answers[f"{method} {url}"] = (response.status_code, "Nothing here" in response.get_data(as_text=True))
    assert {route: answer for route, answer in answers.items() if answer != (404, True)} == {}
    db.session.expire_all()
    assert db.session.get(Client, rows["client"]).name == "Untouched Client"
    assert db.session.get(Job, rows["job"]).scope == "Untouched scope"
    assert db.session.get(Job, rows["job"]).line_items[0].quantity == 1
    assert db.session.get(LineItemTemplate, rows["template"]).active


def test_signed_out_visitors_are_sent_to_sign_in(client, rows):
    for method, url in ROUTES:
        url = url.format(**rows)
        response = client.get(url) if method == "GET" else client.post_form(url, HIJACK)
        assert response.status_code == 302 and "/login" in response.headers["Location"], f"{method} {url}"


@pytest.mark.parametrize("role", ["office", "owner"])
def test_staff_open_every_office_page(db, login, rows, role, request):
    browser = login(request.getfixturevalue(role))
    for method, url in ROUTES:
        if method == "GET":
            response = browser.get(url.format(**rows))
            assert response.status_code == 200, url


def test_a_boosted_form_with_errors_is_answered_200_so_htmx_swaps_it_in(db, login, office):
    browser = login(office)
    response = browser.htmx("POST", "/office/clients/new", {"name": "", "billing_emails": "nope"},
                            headers={"HX-Boosted": "true"})
    assert response.status_code == 200
    assert "This field is required." in response.get_data(as_text=True)
    assert db.session.query(Client).count() == 0


def test_ids_too_large_for_postgresql_are_a_404_not_a_server_error(login, office):
    client = login(office)
    huge = 2**40
    for url in (f"/office/clients/{huge}", f"/office/clients/1/sites/{huge}/edit", f"/office/templates/{huge}/edit",
                f"/office/jobs/{huge}"):
        assert client.get(url).status_code == 404, url
