"""Office: the job detail page, editing its line items, completing and reopening it."""
import pytest

from portal.audit.services import Actor
from portal.billing.models import BillingStatus, BillingTrigger, TriggerStatus
from portal.extensions import db as _db
from portal.jobs.models import JobLineItem, Note, Photo, WorkStatus
from portal.jobs.services import add_note, complete_job
from tests import factories

BILLED_MESSAGE = "This job has been billed; void the bill before changing its items."


def add_photo(job, n):
    photo = Photo(job=job, storage_key=f"jobs/{job.id}/{n}.jpg", content_type="image/jpeg",
                  original_filename=f"sink-{n}.jpg", size_bytes=1000, width=800, height=600, sha256=f"{n:064d}")
    _db.session.add(photo)
    _db.session.commit()
    return photo


def items_htmx(browser, method, url, data=None):
    return browser.htmx(method, url, data, headers={"HX-Target": "line-items"})


def test_detail_shows_header_photos_notes_items_totals_and_trail(db, login, office, crew):
    client = factories.client(name="Acme Rentals")
    site = factories.site(client, name="Unit 4B", address="4 Elm St", access_notes="Gate code 1234")
    job = factories.job(client, site=site, crew=[crew], external_ref="TCK-9", items=[("Labor", "2", 8500)])
    factories.job(client)  # another job, whose things must not show
    add_note(job, "Shut-off valve is seized", by=Actor.for_user(crew))
    db.session.commit()
    photos = [add_photo(job, 1), add_photo(job, 2)]

    response = login(office).get(f"/office/jobs/{job.id}")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert job.number in page and "Acme Rentals" in page and "Unit 4B" in page and "Gate code 1234" in page
    assert "https://www.google.com/maps/search/?api=1&amp;query=4%20Elm%20St" in page
    assert "TCK-9" in page and "Casey Crew" in page and "Scheduled" in page and "Not billed" in page
    for photo in photos:
        assert f'href="/photos/{photo.id}"' in page and f'src="/photos/{photo.id}/thumb"' in page
    assert "Shut-off valve is seized" in page
    assert "Labor" in page and "$85.00" in page and "$170.00" in page
    assert 'id="line-items"' in page and 'hx-target="this"' in page
    assert "job.created" in page and "note.added" in page and "line_item.added" in page
    assert "Casey Crew (crew)" in page


def test_office_adds_a_note(db, login, office):
    job = factories.job()
    browser = login(office)
    response = browser.post_form(f"/office/jobs/{job.id}/notes", {"body": "Customer called: gate is open"})
    assert response.status_code == 302
    page = browser.get(f"/office/jobs/{job.id}").get_data(as_text=True)
    assert "Customer called: gate is open" in page and "Olive Office" in page
    assert browser.post_form(f"/office/jobs/{job.id}/notes", {"body": "  "}).status_code == 422
    assert db.session.query(Note).count() == 1


def test_office_adds_edits_and_removes_lines_through_the_component(db, login, office):
    template = factories.template(name="Drain cleaning", unit_amount=12000, unit="each")
    job = factories.job()
    browser = login(office)

    response = items_htmx(browser, "POST", f"/office/jobs/{job.id}/items",
                          {"template_id": str(template.id), "quantity": "2", "unit_amount": "", "description": ""})
    body = response.get_data(as_text=True)
    assert response.status_code == 200 and body.lstrip().startswith('<section id="line-items"')
    assert "Drain cleaning" in body and "$240.00" in body

    response = items_htmx(browser, "POST", f"/office/jobs/{job.id}/items",
                          {"template_id": "0", "description": "Replacement trap", "quantity": "1",
                           "unit_amount": "18.50"})
    assert "Replacement trap" in response.get_data(as_text=True) and "$258.50" in response.get_data(as_text=True)
    trap = db.session.scalars(db.select(JobLineItem).filter_by(description="Replacement trap")).one()
    assert trap.unit_amount == 1850

    form = items_htmx(browser, "GET", f"/office/jobs/{job.id}/items?edit={trap.id}").get_data(as_text=True)
    assert f'hx-post="/office/jobs/{job.id}/items/{trap.id}"' in form and 'value="18.50"' in form

    response = items_htmx(browser, "POST", f"/office/jobs/{job.id}/items/{trap.id}",
                          {"description": "Replacement P-trap", "quantity": "2", "unit_amount": "20.00"})
    body = response.get_data(as_text=True)
    assert "Replacement P-trap" in body and "$40.00" in body and "$280.00" in body
    db.session.expire_all()
    assert (trap.quantity, trap.unit_amount, trap.amount) == (2, 2000, 4000)
    assert job.work_status == WorkStatus.SCHEDULED  # the office pricing a job does not start it

    response = items_htmx(browser, "POST", f"/office/jobs/{job.id}/items/{trap.id}/remove")
    assert "Replacement P-trap" not in response.get_data(as_text=True) and "$240.00" in response.get_data(as_text=True)
    assert db.session.query(JobLineItem).count() == 1


def test_a_bad_line_is_refused_with_its_reason(db, login, office):
    job = factories.job()
    browser = login(office)
    response = items_htmx(browser, "POST", f"/office/jobs/{job.id}/items",
                          {"template_id": "0", "description": "Parts", "quantity": "0", "unit_amount": "5.00"})
    assert "quantity must be greater than zero" in response.get_data(as_text=True)
    response = browser.post_form(f"/office/jobs/{job.id}/items",
                                 {"template_id": "0", "description": "Parts", "quantity": "1", "unit_amount": "5.001"})
    assert response.status_code == 422 and "fractions of a cent" in response.get_data(as_text=True)
    assert db.session.query(JobLineItem).count() == 0


def test_a_line_of_another_job_is_not_found(db, login, office):
    job, other = factories.job(items=[("Labor", "1", 8500)]), factories.job(items=[("Parts", "1", 500)])
    item = other.line_items[0]
    response = login(office).post_form(f"/office/jobs/{job.id}/items/{item.id}/remove")
    assert response.status_code == 404
    assert db.session.get(JobLineItem, item.id) is not None


def test_office_edits_items_of_a_completed_job_waiting_for_its_batch(db, login, office, crew):
    job = factories.job(factories.client(batching="weekly"), crew=[crew], items=[("Labor", "1", 8500)])
    complete_job(job, by=Actor.for_user(crew))
    db.session.commit()
    assert job.billing_status == BillingStatus.READY_TO_BILL
    item = job.line_items[0]

    response = items_htmx(login(office), "POST", f"/office/jobs/{job.id}/items/{item.id}",
                          {"description": "Labor", "quantity": "1.5", "unit_amount": "85.00"})
    assert "$127.50" in response.get_data(as_text=True)
    db.session.expire_all()
    assert item.amount == 12750


def test_office_is_refused_once_the_job_is_billed(db, login, office, crew):
    job = factories.job(crew=[crew], items=[("Labor", "1", 8500)])
    complete_job(job, by=Actor.for_user(crew))
    db.session.commit()
    assert job.billing_status == BillingStatus.PENDING
    item = job.line_items[0]
    browser = login(office)

    page = browser.get(f"/office/jobs/{job.id}").get_data(as_text=True)
    assert BILLED_MESSAGE in page and f"/items/{item.id}/remove" not in page

    response = items_htmx(browser, "POST", f"/office/jobs/{job.id}/items/{item.id}",
                          {"description": "Labor", "quantity": "3", "unit_amount": "85.00"})
    assert BILLED_MESSAGE in response.get_data(as_text=True)
    response = browser.post_form(f"/office/jobs/{job.id}/items/{item.id}/remove")
    assert response.status_code == 409 and BILLED_MESSAGE in response.get_data(as_text=True)
    response = browser.post_form(f"/office/jobs/{job.id}/items",
                                 {"template_id": "0", "description": "Extra", "quantity": "1", "unit_amount": "1.00"})
    assert response.status_code == 409
    db.session.expire_all()
    assert [(line.description, line.amount) for line in job.line_items] == [("Labor", 8500)]


def test_office_completes_a_job_for_the_crew_and_is_told_why_not(db, login, office):
    job = factories.job()
    browser = login(office)
    response = browser.post_form(f"/office/jobs/{job.id}/complete", {})
    assert response.status_code == 422
    assert "Add at least one line item" in response.get_data(as_text=True)
    db.session.expire_all()
    assert job.work_status == WorkStatus.SCHEDULED

    free = factories.job(factories.client(allow_no_charge=True))
    response = browser.post_form(f"/office/jobs/{free.id}/complete", {"no_charge_reason": "Warranty callback"})
    assert response.status_code == 302
    page = browser.get(f"/office/jobs/{free.id}").get_data(as_text=True)
    assert "Warranty callback" in page and "No charge" in page and "Olive Office" in page
    db.session.expire_all()
    assert free.work_status == WorkStatus.COMPLETED and free.completed_by.name == "Olive Office"


def test_reopen_needs_a_reason_and_shows_in_the_trail(db, login, office, crew):
    job = factories.job(crew=[crew], items=[("Labor", "1", 8500)])
    complete_job(job, by=Actor.for_user(crew))
    db.session.commit()
    browser = login(office)

    response = browser.post_form(f"/office/jobs/{job.id}/reopen", {"reason": "   "})
    assert response.status_code == 422 and "Say why the job is reopened." in response.get_data(as_text=True)
    db.session.expire_all()
    assert job.work_status == WorkStatus.COMPLETED

    response = browser.post_form(f"/office/jobs/{job.id}/reopen", {"reason": "Tap still drips"})
    assert response.status_code == 302
    db.session.expire_all()
    assert job.work_status == WorkStatus.IN_PROGRESS and job.billing_status == BillingStatus.NOT_BILLED
    assert [trigger.status for trigger in job.billing_triggers] == [TriggerStatus.CANCELLED]
    page = browser.get(f"/office/jobs/{job.id}").get_data(as_text=True)
    assert "job.reopened" in page and "Reason: Tap still drips" in page and "Olive Office (office)" in page
    assert "Billing attempts" in page and "Cancelled" in page
    # Once reopened, the office can change the lines again.
    assert f"/items/{job.line_items[0].id}/remove" in page

    response = browser.post_form(f"/office/jobs/{job.id}/reopen", {"reason": "Again"})
    assert response.status_code == 409 and "Only a completed job can be reopened." in response.get_data(as_text=True)
    assert db.session.query(BillingTrigger).count() == 1


@pytest.mark.parametrize("target", ["line-items", None])
def test_htmx_and_plain_requests_get_the_right_shape(db, login, office, target):
    job = factories.job(items=[("Labor", "1", 8500)])
    headers = {"HX-Target": target} if target else {}
    response = login(office).htmx("GET", f"/office/jobs/{job.id}/items", headers=headers)
    body = response.get_data(as_text=True)
    assert response.status_code == 200
    if target:
        assert body.lstrip().startswith('<section id="line-items"')
    else:
        assert "<html" in body and f"Job {job.number}" in body
