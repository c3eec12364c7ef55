"""The offline crew app's server side (issue 9): replays by change id, conflicts, the manifest and service worker."""
import html
import io
import json
import re
import threading
import uuid
from datetime import timedelta

import pytest
from PIL import Image

from portal.audit.models import AuditEntry
from portal.audit.services import Actor
from portal.billing.models import BillingTrigger
from portal.crew.models import CrewChange
from portal.crew.services import _offline_version
from portal.jobs.models import Job, JobLineItem, Note, Photo, WorkStatus
from portal.jobs.services import assign_crew, complete_job, reopen_job
from tests import factories


@pytest.fixture
def labor(db):
    return factories.template("Labor", 8500, unit="hour")


@pytest.fixture
def job(db, crew):
    return factories.job(crew=[crew], scheduled_in=timedelta(0))


def jpeg(colour="orange", size=(120, 90)):
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG")
    return buffer.getvalue()


def queued(client, method, url, change_id, data=None, seen=None):
    """A change as offline.js replays it: htmx-style, with the phone's change id (and the reopens it saw)."""
    headers = {"X-Client-Change-Id": change_id}
    if seen is not None:
        headers["X-Job-Reopens"] = str(seen)
    return client.htmx(method, url, data=data, headers=headers)


def text_of(response):
    """The answer as a person reads it: tags dropped, whitespace collapsed."""
    return html.unescape(" ".join(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)).split()))


def count(db, model, **where):
    db.session.expire_all()
    return db.session.query(model).filter_by(**where).count()


# --- Each kind replayed: the original answer, one row -----------------------------------------------

def test_a_replayed_note_answers_the_original_and_stores_one_note(db, crew, job, login):
    client = login(crew)
    change_id = str(uuid.uuid4())
    first = queued(client, "POST", f"/crew/jobs/{job.id}/notes", change_id, {"body": "Shut-off valve replaced"})
    again = queued(client, "POST", f"/crew/jobs/{job.id}/notes", change_id, {"body": "Shut-off valve replaced"})

    assert (first.status_code, first.headers["X-Client-Change"]) == (200, "applied")
    assert (again.status_code, again.headers["X-Client-Change"]) == (200, "replayed")
    assert "Shut-off valve replaced" in again.get_data(as_text=True)
    assert [note.body for note in db.session.query(Note).filter_by(job_id=job.id)] == ["Shut-off valve replaced"]
    assert count(db, CrewChange, client_id=change_id) == 1


def test_a_replayed_line_item_answers_the_original_and_stores_one_line(db, crew, job, labor, login):
    client = login(crew)
    change_id = str(uuid.uuid4())
    answers = [queued(client, "POST", f"/crew/jobs/{job.id}/items", change_id,
                      {"template_id": str(labor.id), "quantity": "2.5"}) for _ in range(3)]

    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert [answer.headers["X-Client-Change"] for answer in answers] == ["applied", "replayed", "replayed"]
    assert "$212.50" in answers[-1].get_data(as_text=True)
    assert count(db, JobLineItem, job_id=job.id) == 1


def test_a_replayed_photo_answers_the_first_photo_even_if_the_bytes_differ(db, crew, job, login):
    """A lost answer, then the queue resends the phone-scaled copy under the same id: still one photo."""
    client = login(crew)
    change_id = str(uuid.uuid4())
    first = queued(client, "POST", f"/crew/jobs/{job.id}/photos", change_id,
                   {"photos": (io.BytesIO(jpeg("orange")), "valve.jpg")})
    again = queued(client, "POST", f"/crew/jobs/{job.id}/photos", change_id,
                   {"photos": (io.BytesIO(jpeg("teal", (60, 45))), "valve.jpg")})

    photos = db.session.query(Photo).filter_by(job_id=job.id).all()
    assert len(photos) == 1
    assert first.status_code == again.status_code == 200
    assert again.headers["X-Client-Change"] == "replayed"
    assert f'id="photo-{photos[0].id}"' in first.get_data(as_text=True)
    assert f'id="photo-{photos[0].id}"' in again.get_data(as_text=True)


def test_a_replayed_completion_answers_success_and_completes_once(db, crew, login):
    job = factories.job(crew=[crew], scheduled_in=timedelta(0), items=[("Labor", "1", 8500)])
    client = login(crew)
    change_id = str(uuid.uuid4())
    first = queued(client, "POST", f"/crew/jobs/{job.id}/complete", change_id)
    again = queued(client, "POST", f"/crew/jobs/{job.id}/complete", change_id)
    form_replay = client.post_form(f"/crew/jobs/{job.id}/complete", {"client_change_id": change_id})

    assert (first.status_code, again.status_code) == (200, 200)
    assert "Completed by Casey Crew" in text_of(again)
    assert again.headers["X-Client-Change"] == "replayed"
    assert form_replay.status_code == 303 and form_replay.headers["Location"].endswith(f"/crew/jobs/{job.id}")
    db.session.expire_all()
    assert db.session.get(Job, job.id).work_status == WorkStatus.COMPLETED
    assert count(db, BillingTrigger, job_id=job.id) == 1
    assert count(db, AuditEntry, job_id=job.id, action="job.completed") == 1


def test_a_new_completion_of_a_completed_job_is_still_refused(db, crew, login):
    job = factories.job(crew=[crew], scheduled_in=timedelta(0), items=[("Labor", "1", 8500)])
    client = login(crew)
    assert queued(client, "POST", f"/crew/jobs/{job.id}/complete", str(uuid.uuid4())).status_code == 200
    second = queued(client, "POST", f"/crew/jobs/{job.id}/complete", str(uuid.uuid4()))
    assert second.status_code == 409
    assert "This job is already completed." in second.get_data(as_text=True)
    assert count(db, BillingTrigger, job_id=job.id) == 1


def test_concurrent_replays_of_one_change_store_one_note(app, db, crew, job, live_server):
    """Two copies of the same change in flight at once (a retry racing a slow first try)."""
    import requests  # noqa: PLC0415 (only this test speaks real HTTP)

    session = requests.Session()
    page = session.get(f"{live_server.url}/login").text
    token = page.split('name="csrf_token" type="hidden" value="', 1)[1].split('"', 1)[0]
    session.post(f"{live_server.url}/login", data={"email": crew.email, "password": factories.PASSWORD,
                                                   "csrf_token": token})
    page = session.get(f"{live_server.url}/crew/jobs").text
    token = page.split('"X-CSRFToken": "', 1)[1].split('"', 1)[0]  # signing in starts a new session
    change_id = str(uuid.uuid4())
    headers = {"X-CSRFToken": token, "HX-Request": "true", "X-Client-Change-Id": change_id}
    url = f"{live_server.url}/crew/jobs/{job.id}/notes"
    answers = []

    def send():
        answers.append(session.post(url, data={"body": "Both at once"}, headers=headers))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(answer.status_code for answer in answers) == [200] * 4
    assert sorted(answer.headers["X-Client-Change"] for answer in answers) == ["applied"] + ["replayed"] * 3
    assert count(db, Note, job_id=job.id) == 1


# --- Change ids ------------------------------------------------------------------------------------

def test_a_change_id_is_a_uuid_and_cannot_be_reused_for_another_change(db, crew, job, labor, login):
    client = login(crew)
    malformed = queued(client, "POST", f"/crew/jobs/{job.id}/notes", "not-a-uuid", {"body": "Hello"})
    assert malformed.status_code == 400
    assert "not a UUID" in malformed.get_data(as_text=True)

    change_id = str(uuid.uuid4())
    assert queued(client, "POST", f"/crew/jobs/{job.id}/notes", change_id, {"body": "Hello"}).status_code == 200
    reused = queued(client, "POST", f"/crew/jobs/{job.id}/items", change_id,
                    {"template_id": str(labor.id), "quantity": "1"})
    assert reused.status_code == 422
    assert "already used for another change" in reused.get_data(as_text=True)
    assert count(db, JobLineItem, job_id=job.id) == 0


def test_another_crew_members_change_id_replays_nothing_of_theirs(db, crew, other_crew, job, login):
    theirs = factories.job(crew=[other_crew], scheduled_in=timedelta(0))
    change_id = str(uuid.uuid4())
    assert queued(login(other_crew), "POST", f"/crew/jobs/{theirs.id}/notes", change_id,
                  {"body": "Private note"}).status_code == 200

    mine = queued(login(crew), "POST", f"/crew/jobs/{job.id}/notes", change_id, {"body": "Mine"})
    assert mine.status_code == 422
    assert "Private note" not in mine.get_data(as_text=True)


# --- Conflicts: what the office did while the phone was offline ---------------------------------------

def test_a_reassigned_job_is_not_found_and_nothing_is_stored(db, crew, other_crew, office, job, login):
    client = login(crew)
    assign_crew(job, [other_crew], by=Actor.for_user(office))
    db.session.commit()

    answer = queued(client, "POST", f"/crew/jobs/{job.id}/notes", str(uuid.uuid4()), {"body": "Done"}, seen=0)
    assert answer.status_code == 404
    assert count(db, Note) == 0 and count(db, CrewChange) == 0


def test_a_job_completed_meanwhile_refuses_queued_changes_with_the_reason(db, crew, office, login):
    job = factories.job(crew=[crew], scheduled_in=timedelta(0), items=[("Labor", "1", 8500)])
    client = login(crew)
    complete_job(job, by=Actor.for_user(office))
    db.session.commit()

    note = queued(client, "POST", f"/crew/jobs/{job.id}/notes", str(uuid.uuid4()), {"body": "Late"}, seen=0)
    photo = queued(client, "POST", f"/crew/jobs/{job.id}/photos", str(uuid.uuid4()),
                   {"photos": (io.BytesIO(jpeg()), "late.jpg")}, seen=0)
    assert note.status_code == photo.status_code == 409
    assert "This job is completed; ask the office to reopen it." in note.get_data(as_text=True)
    assert 'role="alert"' in photo.get_data(as_text=True)
    assert count(db, Note) == 0 and count(db, Photo) == 0 and count(db, CrewChange) == 0


def test_a_job_reopened_after_the_phone_loaded_it_refuses_until_the_crew_has_looked(db, crew, office, login):
    job = factories.job(crew=[crew], scheduled_in=timedelta(0), items=[("Labor", "1", 8500)])
    client = login(crew)
    card = client.get(f"/crew/jobs/{job.id}").get_data(as_text=True)
    assert 'data-job-reopens="0"' in card
    complete_job(job, by=Actor.for_user(crew))
    reopen_job(job, by=Actor.for_user(office), reason="Customer wants the hall tap done too")
    db.session.commit()

    change_id = str(uuid.uuid4())
    refused = queued(client, "POST", f"/crew/jobs/{job.id}/complete", change_id, seen=0)
    assert refused.status_code == 409
    assert "The office reopened this job (Customer wants the hall tap done too) after this phone loaded it." in \
        refused.get_data(as_text=True)
    assert refused.headers["X-Job-Reopens"] == "1"
    assert count(db, CrewChange) == 0

    # "Try again" on the card: the same change, now with the reopen count the crew member has seen.
    accepted = queued(client, "POST", f"/crew/jobs/{job.id}/complete", change_id, seen=1)
    assert accepted.status_code == 200 and accepted.headers["X-Client-Change"] == "applied"
    assert count(db, AuditEntry, job_id=job.id, action="job.completed") == 2
    assert 'data-job-reopens="1"' in client.get(f"/crew/jobs/{job.id}").get_data(as_text=True)


def test_ordinary_posts_without_a_change_id_work_as_before(db, crew, job, login):
    response = login(crew).post_form(f"/crew/jobs/{job.id}/notes", {"body": "Plain form post"})
    assert response.status_code == 303
    assert "X-Client-Change" not in response.headers
    assert count(db, Note, job_id=job.id) == 1 and count(db, CrewChange) == 0


# --- Installing the app ----------------------------------------------------------------------------

def test_the_manifest_makes_an_installable_standalone_crew_app(client):
    response = client.get("/crew/manifest.webmanifest")
    assert response.status_code == 200
    assert response.mimetype == "application/manifest+json"
    manifest = json.loads(response.get_data(as_text=True))
    assert (manifest["start_url"], manifest["scope"], manifest["display"]) == ("/crew/jobs", "/crew/", "standalone")
    sizes = {(icon["sizes"], icon["purpose"]) for icon in manifest["icons"]}
    assert {("192x192", "any"), ("512x512", "any"), ("192x192", "maskable"), ("512x512", "maskable")} <= sizes
    for icon in manifest["icons"]:
        image = client.get(icon["src"])
        assert image.status_code == 200 and image.mimetype == "image/png"
        width, height = Image.open(io.BytesIO(image.data)).size
        assert f"{width}x{height}" == icon["sizes"]
        image.close()


def test_the_service_worker_is_served_from_crew_uncached_and_versioned(app, client):
    response = client.get("/crew/sw.js")
    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    assert response.headers["Cache-Control"] == "no-cache"
    source = response.get_data(as_text=True)
    from portal.crew.services import offline_version

    assert f'var VERSION = "{offline_version()}";' in source
    assert 'var SCOPE = "/crew/";' in source
    assert "/static/offline.js" in source


def test_the_cache_version_changes_when_a_deployed_file_changes(tmp_path):
    static, root = tmp_path / "static", tmp_path / "portal"
    static.mkdir()
    (root / "templates" / "crew").mkdir(parents=True)
    (static / "crew.js").write_text("one")
    before = _offline_version(str(static), str(root))
    (static / "crew.js").write_text("two")
    _offline_version.cache_clear()
    assert _offline_version(str(static), str(root)) != before


def test_crew_pages_name_their_user_for_the_per_user_cache(db, crew, office, job, login):
    assert login(crew).get(f"/crew/jobs/{job.id}").headers["X-Closeout-User"] == str(crew.id)
    assert "X-Closeout-User" not in login(office).get("/office/jobs").headers


def test_sign_out_tells_the_browser_to_drop_the_offline_store(db, crew, login):
    client = login(crew)
    response = client.post_form("/logout")
    assert response.status_code == 302
    assert response.headers["Clear-Site-Data"] == '"cache", "storage"'
