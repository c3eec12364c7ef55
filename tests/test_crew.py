"""Crew closeout over real HTTP: my jobs, the job card, notes, line items, completion, and who may do what."""
import html
import io
import re
from datetime import timedelta

import pytest
from PIL import Image

from portal.audit.models import AuditEntry
from portal.audit.services import Actor
from portal.billing.models import BillingStatus, BillingTrigger, TriggerStatus
from portal.jobs.models import Job, JobLineItem, Note, Photo, WorkStatus
from portal.jobs.services import complete_job
from tests import factories


@pytest.fixture
def labor(db):
    return factories.template("Labor", 8500, unit="hour")


@pytest.fixture
def parts(db):
    return factories.template("Faucet cartridge", 2499, unit="each")


@pytest.fixture
def job(db, crew):
    return factories.job(crew=[crew], scheduled_in=timedelta(0))


def jpeg():
    buffer = io.BytesIO()
    Image.new("RGB", (120, 90), "orange").save(buffer, "JPEG")
    return buffer.getvalue()


def text_of(response):
    """The page as a person reads it: tags dropped, whitespace collapsed."""
    return html.unescape(" ".join(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)).split()))


def reload(db, row):
    db.session.expire_all()
    return db.session.get(type(row), row.id)


# --- My jobs and the job card ---------------------------------------------------------------------

def test_my_jobs_lists_only_my_jobs_grouped_today_upcoming_done(db, crew, other_crew, login):
    today = factories.job(crew=[crew], scheduled_in=timedelta(0), scope="Fix the porch light")
    upcoming = factories.job(crew=[crew], scheduled_in=timedelta(days=3), scope="Annual boiler service")
    done = factories.job(crew=[crew], scheduled_in=timedelta(0), items=[("Labor", "1", 8500)])
    complete_job(done, by=Actor.for_user(crew))
    db.session.commit()
    far_away = factories.job(crew=[crew], scheduled_in=timedelta(days=30))
    theirs = factories.job(crew=[other_crew], scheduled_in=timedelta(0))

    response = login(crew).get("/crew/jobs")

    assert response.status_code == 200
    page = text_of(response)
    assert page.index("Today") < page.index(today.number) < page.index("Upcoming")
    assert page.index("Upcoming") < page.index(upcoming.number) < page.index("Done today") < page.index(done.number)
    assert "Fix the porch light" in page and today.address in page
    assert theirs.number not in page and far_away.number not in page


def test_job_card_shows_address_with_maps_link_scope_and_customer_notes(db, crew, login):
    client_row = factories.client()
    site = factories.site(client_row, address="12 Elm St, Springfield", access_notes="Key under the mat")
    job = factories.job(client_row, crew=[crew], site=site, scope="Replace the kitchen faucet",
                        customer_notes="Dog in the yard, please close the gate")

    response = login(crew).get(f"/crew/jobs/{job.id}")

    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "12 Elm St, Springfield" in page
    assert "https://www.google.com/maps/search/?api=1&amp;query=12%20Elm%20St%2C%20Springfield" in page
    assert "Replace the kitchen faucet" in page and "Dog in the yard, please close the gate" in page
    assert "Key under the mat" in page
    assert 'capture="environment"' in page and "multiple" in page and 'accept="image/*"' in page


# --- who may do what ------------------------------------------------------------------------------

def crew_routes(job_id, photo_id, item_id):
    """Every crew route, as (method, url, form data)."""
    base = f"/crew/jobs/{job_id}"
    return [
        ("GET", base, None),
        ("GET", f"{base}/complete", None),
        ("POST", f"{base}/photos", {"photos": (io.BytesIO(jpeg()), "x.jpg")}),
        ("POST", f"{base}/photos/{photo_id}/delete", {}),
        ("POST", f"{base}/notes", {"body": "sneaky"}),
        ("POST", f"{base}/items", {"template_id": "1", "quantity": "1"}),
        ("POST", f"{base}/items/{item_id}/delete", {}),
        ("POST", f"{base}/complete", {}),
    ]


@pytest.fixture
def someone_elses_job(db, other_crew, labor, login):
    """A job of other_crew's, with a photo, a note and a line item."""
    job = factories.job(crew=[other_crew], items=[("Labor", "1", 8500)])
    response = login(other_crew).htmx("POST", f"/crew/jobs/{job.id}/photos",
                                      data={"photos": (io.BytesIO(jpeg()), "theirs.jpg")})
    assert response.status_code == 200
    return job


def snapshot(db, job):
    """What a change to the job would show up in."""
    db.session.expire_all()
    job = db.session.get(Job, job.id)
    return (job.work_status, len(job.photos), len(job.notes), len(job.line_items),
            db.session.query(BillingTrigger).count(), db.session.query(AuditEntry).count())


@pytest.mark.parametrize("role", ["crew", "office", "owner", "partner"])
def test_other_peoples_jobs_and_other_roles_get_404_on_every_crew_route(db, request, login, someone_elses_job, role):
    user = request.getfixturevalue(role)
    job = someone_elses_job
    before = snapshot(db, job)
    client = login(user)

    for method, url, data in crew_routes(job.id, job.photos[0].id, job.line_items[0].id):
        if method == "GET":
            response = client.get(url)
        else:
            response = client.post_form(url, data, content_type="multipart/form-data")
        assert response.status_code == 404, f"{role} {method} {url}"

    if role != "crew":
        assert client.get("/crew/jobs").status_code == 404
    assert snapshot(db, job) == before


def test_my_job_urls_cannot_reach_another_jobs_photo_or_line_item(db, crew, login, someone_elses_job):
    mine = factories.job(crew=[crew], items=[("Labor", "1", 8500)])
    theirs = someone_elses_job
    before = snapshot(db, theirs)
    client = login(crew)

    assert client.post_form(f"/crew/jobs/{mine.id}/photos/{theirs.photos[0].id}/delete").status_code == 404
    assert client.post_form(f"/crew/jobs/{mine.id}/items/{theirs.line_items[0].id}/delete").status_code == 404
    assert client.get(f"/crew/jobs/{2**40}").status_code == 404
    assert snapshot(db, theirs) == before


def test_signed_out_visitors_are_sent_to_sign_in(client, job):
    response = client.get(f"/crew/jobs/{job.id}")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_a_post_without_csrf_token_is_refused(db, crew, login, job, labor):
    client = login(crew)
    before = snapshot(db, job)

    assert client.post(f"/crew/jobs/{job.id}/notes", data={"body": "no token"}).status_code == 400
    assert client.post(f"/crew/jobs/{job.id}/items", data={"template_id": labor.id, "quantity": "1"}).status_code == 400
    assert client.post(f"/crew/jobs/{job.id}/complete").status_code == 400
    assert snapshot(db, job) == before


# --- notes ----------------------------------------------------------------------------------------

def test_notes_are_added_with_htmx_or_a_plain_form(db, crew, login, job):
    client = login(crew)

    response = client.htmx("POST", f"/crew/jobs/{job.id}/notes", data={"body": "Shut-off valve is seized"})
    assert response.status_code == 200
    fragment = response.get_data(as_text=True)
    assert fragment.lstrip().startswith('<section class="card" id="job-notes"') and "Shut-off valve is seized" in fragment

    response = client.post_form(f"/crew/jobs/{job.id}/notes", {"body": "Customer signed off"})
    assert response.status_code == 303 and response.headers["Location"].endswith(f"/crew/jobs/{job.id}#job-notes")
    page = text_of(client.get(response.headers["Location"]))
    assert "Shut-off valve is seized" in page and "Customer signed off" in page and "Casey Crew" in page
    assert reload(db, job).work_status == WorkStatus.IN_PROGRESS


def test_an_empty_note_is_refused_with_a_message(db, crew, login, job):
    client = login(crew)
    response = client.htmx("POST", f"/crew/jobs/{job.id}/notes", data={"body": "   "})
    assert response.status_code == 400 and "Write something first." in response.get_data(as_text=True)
    response = client.post_form(f"/crew/jobs/{job.id}/notes", {"body": ""})
    assert response.status_code == 400 and "Write something first." in response.get_data(as_text=True)
    assert db.session.query(Note).count() == 0


# --- line items -----------------------------------------------------------------------------------

def test_line_items_are_picked_from_templates_with_a_quantity(db, crew, login, job, labor, parts):
    client = login(crew)

    response = client.htmx("POST", f"/crew/jobs/{job.id}/items", data={"template_id": labor.id, "quantity": "2.5"})
    assert response.status_code == 200
    response = client.post_form(f"/crew/jobs/{job.id}/items", {"template_id": parts.id, "quantity": "2"})
    assert response.status_code == 303

    page = text_of(client.get(f"/crew/jobs/{job.id}"))
    assert "Labor 2.5 hour × $85.00 $212.50" in page
    assert "Faucet cartridge 2 each × $24.99 $49.98" in page
    assert "Total $262.48" in page
    items = db.session.scalars(db.select(JobLineItem).order_by(JobLineItem.id)).all()
    assert [(item.template_id, item.amount) for item in items] == [(labor.id, 21250), (parts.id, 4998)]


def test_removing_a_line_item_updates_the_total(db, crew, login, job, labor, parts):
    client = login(crew)
    client.htmx("POST", f"/crew/jobs/{job.id}/items", data={"template_id": labor.id, "quantity": "1"})
    client.htmx("POST", f"/crew/jobs/{job.id}/items", data={"template_id": parts.id, "quantity": "1"})
    labor_line = db.session.scalars(db.select(JobLineItem).where(JobLineItem.template_id == labor.id)).one()

    response = client.htmx("POST", f"/crew/jobs/{job.id}/items/{labor_line.id}/delete")

    assert response.status_code == 200
    fragment = response.get_data(as_text=True)
    assert f'id="line-item-{labor_line.id}"' not in fragment and "Total $24.99" in text_of(response)
    assert db.session.scalars(db.select(JobLineItem.template_id)).all() == [parts.id]


@pytest.mark.parametrize(("template", "quantity", "message"), [
    ("labor", "0", "quantity must be greater than zero"),
    ("labor", "two", "quantity must be a number"),
    ("labor", "1.0005", "quantity allows at most 3 decimal places"),
    (None, "1", "Pick an item from the list."),
    ("retired", "1", "Pick an item from the list."),
    ("euro", "1", "Pick an item from the list."),
])
def test_bad_line_items_are_refused_with_a_message(db, crew, login, job, labor, template, quantity, message):
    templates = {
        "labor": labor,
        "retired": factories.template("Old service", 1000, active=False),
        "euro": factories.template("Euro labor", 9000, currency="eur"),
    }
    template_id = templates[template].id if template else ""
    client = login(crew)

    response = client.htmx("POST", f"/crew/jobs/{job.id}/items", data={"template_id": template_id, "quantity": quantity})
    assert response.status_code == 422 and message in response.get_data(as_text=True)
    response = client.post_form(f"/crew/jobs/{job.id}/items", {"template_id": template_id, "quantity": quantity})
    assert response.status_code == 422 and message in response.get_data(as_text=True)
    assert db.session.query(JobLineItem).count() == 0


# --- completing -----------------------------------------------------------------------------------

def test_completing_shows_a_confirmation_then_a_read_only_card(db, crew, login, job, labor, parts):
    client = login(crew)
    client.htmx("POST", f"/crew/jobs/{job.id}/items", data={"template_id": labor.id, "quantity": "2"})
    client.htmx("POST", f"/crew/jobs/{job.id}/items", data={"template_id": parts.id, "quantity": "1"})

    confirmation = text_of(client.get(f"/crew/jobs/{job.id}/complete"))
    assert "Labor 2 hour × $85.00 $170.00" in confirmation and "Faucet cartridge" in confirmation
    assert "Total $194.99" in confirmation
    assert db.session.query(BillingTrigger).count() == 0  # looking at the confirmation changes nothing

    response = client.post_form(f"/crew/jobs/{job.id}/complete")
    assert response.status_code == 303 and response.headers["Location"].endswith(f"/crew/jobs/{job.id}")

    card = text_of(client.get(f"/crew/jobs/{job.id}"))
    assert "Completed by Casey Crew at" in card and "Billing pending" in card and "Total $194.99" in card
    assert "Add item" not in card and "Save note" not in card and "Add photos" not in card
    assert "Complete job" not in card
    job = reload(db, job)
    assert job.work_status == WorkStatus.COMPLETED and job.completed_by == crew and job.completed_at is not None
    assert [t.status for t in job.billing_triggers] == [TriggerStatus.PENDING]


def test_a_job_without_line_items_cannot_be_completed(db, crew, login, job):
    client = login(crew)
    confirmation = text_of(client.get(f"/crew/jobs/{job.id}/complete"))
    assert "No line items yet." in confirmation

    response = client.post_form(f"/crew/jobs/{job.id}/complete")

    assert response.status_code == 422
    assert "Add at least one line item: this client's jobs are not no-charge." in text_of(response)
    job = reload(db, job)
    assert job.work_status == WorkStatus.SCHEDULED and job.completed_at is None
    assert db.session.query(BillingTrigger).count() == 0


def test_a_no_charge_client_allows_completing_without_line_items(db, crew, login):
    job = factories.job(factories.client(allow_no_charge=True), crew=[crew])
    client = login(crew)
    assert "No line items — this client allows no-charge jobs" in text_of(client.get(f"/crew/jobs/{job.id}/complete"))

    assert client.post_form(f"/crew/jobs/{job.id}/complete").status_code == 303

    card = text_of(client.get(f"/crew/jobs/{job.id}"))
    assert "Completed by Casey Crew" in card and "No charge" in card
    assert reload(db, job).billing_status == BillingStatus.NO_CHARGE
    assert db.session.query(BillingTrigger).count() == 0


def test_completing_twice_is_refused(db, crew, login, job, labor):
    client = login(crew)
    client.post_form(f"/crew/jobs/{job.id}/items", {"template_id": labor.id, "quantity": "1"})
    assert client.post_form(f"/crew/jobs/{job.id}/complete").status_code == 303
    completed_at = reload(db, job).completed_at

    response = client.post_form(f"/crew/jobs/{job.id}/complete")

    assert response.status_code == 409 and "This job is already completed." in response.get_data(as_text=True)
    assert reload(db, job).completed_at == completed_at
    assert db.session.query(BillingTrigger).count() == 1
    response = client.get(f"/crew/jobs/{job.id}/complete")
    assert response.status_code == 303 and response.headers["Location"].endswith(f"/crew/jobs/{job.id}")


def test_nothing_can_be_edited_after_completion(db, crew, login, job, labor):
    client = login(crew)
    client.post_form(f"/crew/jobs/{job.id}/items", {"template_id": labor.id, "quantity": "1"})
    client.post_form(f"/crew/jobs/{job.id}/notes", {"body": "Done and dusted"})
    client.htmx("POST", f"/crew/jobs/{job.id}/photos", data={"photos": (io.BytesIO(jpeg()), "after.jpg")})
    client.post_form(f"/crew/jobs/{job.id}/complete")
    job = reload(db, job)
    item, photo = job.line_items[0], job.photos[0]
    before = snapshot(db, job)

    attempts = [
        (f"/crew/jobs/{job.id}/notes", lambda: {"body": "one more thing"}),
        (f"/crew/jobs/{job.id}/items", lambda: {"template_id": labor.id, "quantity": "3"}),
        (f"/crew/jobs/{job.id}/items/{item.id}/delete", dict),
        (f"/crew/jobs/{job.id}/photos/{photo.id}/delete", dict),
        (f"/crew/jobs/{job.id}/photos", lambda: {"photos": (io.BytesIO(jpeg()), "late.jpg")}),
    ]
    for url, data in attempts:
        for response in (client.post_form(url, data(), content_type="multipart/form-data"),
                         client.htmx("POST", url, data=data())):
            assert response.status_code == 409, url
            assert "This job is completed; ask the office to reopen it." in text_of(response)

    assert snapshot(db, job) == before
    assert db.session.get(Photo, photo.id) is not None and db.session.get(JobLineItem, item.id) is not None
