"""Office: scheduling, editing and assigning jobs, and the filtered job list."""
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event

from portal.audit.models import AuditEntry
from portal.audit.services import Actor
from portal.billing.models import BillingStatus
from portal.jobs.models import Job, WorkStatus
from portal.clients.models import Client, Site
from portal.jobs.services import add_line_item, complete_job, create_job, visible_jobs
from tests import factories


def job_form(client, **overrides):
    data = {"client_id": str(client.id), "site_id": "0", "scope": "Replace the water heater",
            "customer_notes": "", "external_ref": "", "scheduled_start": "", "scheduled_end": ""}
    data.update(overrides)
    return data


def crew_sees(db, user, job):
    return job.id in db.session.scalars(visible_jobs(user).with_only_columns(Job.id)).all()


def test_office_schedules_a_job_in_business_time_and_the_crew_sees_it(app, db, login, office, crew, monkeypatch):
    monkeypatch.setitem(app.config, "BUSINESS_TIMEZONE", "America/Chicago")
    client = factories.client(name="Acme")
    site = factories.site(client, name="Unit 4B")
    browser = login(office)

    response = browser.post_form("/office/jobs/new", job_form(
        client, site_id=str(site.id), external_ref="TCK-1001", crew=str(crew.id),
        scheduled_start="2025-07-01T09:00", scheduled_end="2025-07-01T11:30"))
    assert response.status_code == 302

    job = db.session.scalars(db.select(Job)).one()
    # Chicago is UTC-5 in July: 9:00 there is 14:00 UTC.
    assert job.scheduled_start == datetime(2025, 7, 1, 14, 0, tzinfo=timezone.utc)
    assert job.scheduled_end == datetime(2025, 7, 1, 16, 30, tzinfo=timezone.utc)
    assert job.site == site and job.external_ref == "TCK-1001" and job.crew == [crew]
    assert crew_sees(db, crew, job)

    page = browser.get(f"/office/jobs/{job.id}").get_data(as_text=True)
    assert "Tue Jul 01, 2025 09:00 AM" in page and "11:30 AM" in page and "Casey Crew" in page
    edit_page = browser.get(f"/office/jobs/{job.id}/edit").get_data(as_text=True)
    assert 'value="2025-07-01T09:00"' in edit_page


def test_a_site_of_another_client_is_refused(db, login, office):
    client, other = factories.client(), factories.client()
    other_site = factories.site(other)
    response = login(office).post_form("/office/jobs/new", job_form(client, site_id=str(other_site.id)))
    assert response.status_code == 422
    assert "That site belongs to another client." in response.get_data(as_text=True)
    assert db.session.query(Job).count() == 0


def test_site_picker_offers_only_the_chosen_clients_sites(db, login, office):
    client, other = factories.client(), factories.client()
    mine = factories.site(client, name="Mine Tower")
    factories.site(other, name="Their Tower")
    response = login(office).htmx("GET", f"/office/jobs/site-options?client_id={client.id}")
    body = response.get_data(as_text=True)
    assert response.status_code == 200 and 'id="site-field"' in body and "<html" not in body
    assert f'value="{mine.id}"' in body and "Mine Tower" in body and "Their Tower" not in body


def test_a_visit_ending_before_it_starts_or_a_reused_reference_is_refused(db, login, office):
    client = factories.client()
    factories.job(client, external_ref="TCK-7")
    browser = login(office)
    response = browser.post_form("/office/jobs/new", job_form(
        client, scheduled_start="2025-07-01T09:00", scheduled_end="2025-07-01T08:00"))
    assert response.status_code == 422 and "The visit must end after it starts." in response.get_data(as_text=True)
    response = browser.post_form("/office/jobs/new", job_form(client, external_ref="TCK-7"))
    assert response.status_code == 422 and "already has the reference TCK-7" in response.get_data(as_text=True)
    assert db.session.query(Job).count() == 1


def test_the_new_job_form_starts_with_no_client_chosen(db, login, office):
    client = factories.client()
    browser = login(office)
    page = browser.get("/office/jobs/new").get_data(as_text=True)
    assert '<option selected value="0">Choose a client…</option>' in page
    page = browser.get(f"/office/jobs/new?client_id={client.id}").get_data(as_text=True)
    assert f'<option selected value="{client.id}">' in page
    response = browser.post_form("/office/jobs/new", job_form(client, client_id="0"))
    assert response.status_code == 422 and "Choose a client." in response.get_data(as_text=True)
    assert db.session.query(Job).count() == 0


def test_a_partner_cannot_be_assigned_as_crew(db, login, office, partner):
    client = factories.client()
    response = login(office).post_form("/office/jobs/new", job_form(client, crew=str(partner.id)))
    assert response.status_code == 422
    assert db.session.query(Job).count() == 0


def test_editing_and_reassigning_a_completed_job_is_audited_per_field(app, db, login, office, crew, other_crew,
                                                                      monkeypatch):
    monkeypatch.setitem(app.config, "BUSINESS_TIMEZONE", "America/Chicago")
    client = factories.client()
    job = factories.job(client, crew=[crew], items=[("Labor", "1", 8500)], scope="Old scope")
    complete_job(job, by=Actor.for_user(crew))
    db.session.commit()

    response = login(office).post_form(f"/office/jobs/{job.id}/edit", job_form(
        client, scope="New scope", crew=str(other_crew.id), scheduled_start="2025-01-15T08:00"))
    assert response.status_code == 302

    db.session.expire_all()
    assert job.scope == "New scope" and job.crew == [other_crew]
    # January in Chicago is UTC-6.
    assert job.scheduled_start == datetime(2025, 1, 15, 14, 0, tzinfo=timezone.utc)
    assert job.work_status == WorkStatus.COMPLETED
    assert crew_sees(db, other_crew, job) and not crew_sees(db, crew, job)
    changes = {entry.field: (entry.old_value, entry.new_value)
               for entry in AuditEntry.query.filter(AuditEntry.job_id == job.id,
                                                    AuditEntry.action.in_(["job.updated", "job.crew_assigned"]))}
    assert changes["scope"] == ("Old scope", "New scope")
    assert changes["crew"] == ("Casey Crew", "Robin Other")
    assert changes["scheduled_start"][1] == "2025-01-15T14:00:00+00:00"


def test_a_job_with_line_items_cannot_move_to_another_client(db, login, office):
    client, other = factories.client(), factories.client()
    job = factories.job(client, items=[("Labor", "1", 8500)])
    response = login(office).post_form(f"/office/jobs/{job.id}/edit", job_form(other, scope=job.scope))
    assert response.status_code == 409
    assert "cannot move to another client" in response.get_data(as_text=True)
    db.session.expire_all()
    assert job.client_id == client.id


# --- The job list ---------------------------------------------------------------------------------

@pytest.fixture
def listed_jobs(app, db, crew, other_crew, monkeypatch):
    """Three jobs that differ in every filter the list has."""
    monkeypatch.setitem(app.config, "BUSINESS_TIMEZONE", "America/Chicago")
    acme = factories.client(name="Acme Rentals", batching="weekly")
    beta = factories.client(name="Beta Homes")
    now = datetime.now(timezone.utc)
    soon = factories.job(acme, crew=[crew], items=[("Labor", "1", 8500)], scope="Fix the faucet",
                         scheduled_in=timedelta(days=1))
    complete_job(soon, by=Actor.for_user(crew))
    later = factories.job(beta, crew=[other_crew], scope="Paint the fence", external_ref="TCK-4242",
                          scheduled_in=timedelta(days=10))
    unassigned = factories.job(acme, scope="Inspect the roof", scheduled_in=timedelta(days=20))
    db.session.commit()
    return {"soon": soon, "later": later, "unassigned": unassigned, "acme": acme, "beta": beta, "now": now}


def listed_numbers(browser, query):
    page = browser.get(f"/office/jobs?{query}").get_data(as_text=True)
    return {number for number in ("J-00001", "J-00002", "J-00003") if number in page}


def chicago_date(moment, days=0):
    return (moment.astimezone(ZoneInfo("America/Chicago")) + timedelta(days=days)).date().isoformat()


def test_each_filter_narrows_the_list(db, login, office, crew, listed_jobs):
    jobs = listed_jobs
    browser = login(office)
    assert listed_numbers(browser, "") == {"J-00001", "J-00002", "J-00003"}
    assert listed_numbers(browser, "work_status=completed") == {"J-00001"}
    assert listed_numbers(browser, "work_status=scheduled") == {"J-00002", "J-00003"}
    assert listed_numbers(browser, "billing_status=ready_to_bill") == {"J-00001"}
    assert listed_numbers(browser, f"client={jobs['beta'].id}") == {"J-00002"}
    assert listed_numbers(browser, f"crew={crew.id}") == {"J-00001"}
    assert listed_numbers(browser, f"scheduled_from={chicago_date(jobs['now'], 5)}") == {"J-00002", "J-00003"}
    assert listed_numbers(browser, f"scheduled_to={chicago_date(jobs['now'], 15)}") == {"J-00001", "J-00002"}
    assert listed_numbers(browser, "q=fence") == {"J-00002"}
    assert listed_numbers(browser, "q=tck-4242") == {"J-00002"}
    assert listed_numbers(browser, "q=acme") == {"J-00001", "J-00003"}
    assert listed_numbers(browser, "q=J-00003") == {"J-00003"}
    assert listed_numbers(browser, f"client={jobs['acme'].id}&work_status=scheduled") == {"J-00003"}


def test_rows_show_client_address_crew_schedule_badges_and_total(db, login, office, listed_jobs):
    page = login(office).get("/office/jobs?work_status=completed").get_data(as_text=True)
    soon = listed_jobs["soon"]
    assert "Acme Rentals" in page and soon.client.address in page and "Casey Crew" in page
    assert soon.scheduled_start.astimezone(ZoneInfo("America/Chicago")).strftime("%I:%M %p") in page
    assert "Completed" in page and BillingStatus.READY_TO_BILL.label in page and "$85.00" in page


def test_an_sql_injection_attempt_is_just_a_search_for_that_text(db, login, office, listed_jobs):
    browser = login(office)
    response = browser.get("/office/jobs", query_string={"q": "x' OR '1'='1'; DROP TABLE jobs; --"})
    assert response.status_code == 200
    assert "No jobs match these filters." in response.get_data(as_text=True)
    assert listed_numbers(browser, "q=%25") == set()  # a typed LIKE wildcard matches only itself
    assert db.session.query(Job).count() == 3


def test_a_nonsense_filter_value_is_ignored_not_an_error(db, login, office, listed_jobs):
    response = login(office).get("/office/jobs?client=abc&work_status=nope&scheduled_from=2025-13-45&page=-3")
    assert response.status_code == 200
    assert "3 jobs" in response.get_data(as_text=True)


def test_htmx_filtering_swaps_only_the_results(db, login, office, listed_jobs):
    response = login(office).htmx("GET", "/office/jobs?q=fence", headers={"HX-Target": "job-results"})
    body = response.get_data(as_text=True)
    assert response.status_code == 200
    assert body.lstrip().startswith('<section id="job-results"') and "<html" not in body
    assert "J-00002" in body and "J-00001" not in body


def test_the_list_pages_by_fifty(db, login, office):
    client = factories.client()
    for days in range(51):
        factories.job(client, scheduled_in=timedelta(days=days + 1))
    browser = login(office)
    first = browser.get("/office/jobs").get_data(as_text=True)
    assert "51 jobs" in first and "J-00050" in first and "J-00051" not in first and "page=2" in first
    second = browser.get("/office/jobs?page=2").get_data(as_text=True)
    assert "J-00051" in second and "J-00050" not in second


def count_statements(db, browser, url):
    statements = []

    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        response = browser.get(url)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert response.status_code == 200
    return len(statements)


def test_the_job_list_does_not_query_per_row(db, login, office, crew, other_crew):
    def add_jobs(count):
        for n in range(count):
            client = Client(name=f"Client {n}", billing_emails=[f"ap{n}@example.com"], address=f"{n} Main St")
            job = create_job(client, by=factories.system(), site=Site(client=client, name="Unit", address=f"{n} Oak"),
                             crew=[crew, other_crew], scheduled_start=datetime.now(timezone.utc))
            add_line_item(job, by=factories.system(), description="Labor", quantity="1", unit_amount=8500)
        db.session.commit()

    browser = login(office)
    add_jobs(5)
    with_five = count_statements(db, browser, "/office/jobs")
    add_jobs(45)
    with_fifty = count_statements(db, browser, "/office/jobs")
    assert with_five == with_fifty
    assert "50 jobs" in browser.get("/office/jobs").get_data(as_text=True)
