"""The offline crew app on a phone (issue 9): queue with no signal, survive a reload, sync once, keep conflicts."""
import time
from datetime import timedelta

import pytest
from playwright.sync_api import Error as PlaywrightError
from PIL import Image

from portal.audit.services import Actor
from portal.billing.models import BillingTrigger
from portal.crew.models import CrewChange
from portal.jobs.models import Job, JobLineItem, Note, Photo, WorkStatus
from portal.jobs.services import assign_crew, complete_job, reopen_job
from tests import factories

pytestmark = pytest.mark.browser

PAGE_CACHED = """async (path) => {
  for (const name of await caches.keys()) {
    if (name.startsWith("closeout-pages-") && await (await caches.open(name)).match(path)) { return true; }
  }
  return false;
}"""
OFFLINE_STORE = """async () => ({
  caches: (await caches.keys()).filter(name => name.startsWith("closeout-")),
  databases: (await indexedDB.databases()).map(db => db.name),
  workers: (await navigator.serviceWorker.getRegistrations()).length,
})"""

# Copies every record of one database's "changes" store into another's (created when missing).
COPY_QUEUE = """([source, target]) => new Promise((resolve, reject) => {
  const open = (name) => new Promise((done) => {
    const request = indexedDB.open(name, 1);
    request.onupgradeneeded = () => request.result.createObjectStore("changes", { keyPath: "seq", autoIncrement: true });
    request.onsuccess = () => done(request.result);
  });
  Promise.all([open(source), open(target)]).then(([from, to]) => {
    from.transaction("changes").objectStore("changes").getAll().onsuccess = (event) => {
      const transaction = to.transaction("changes", "readwrite");
      event.target.result.forEach((record) => transaction.objectStore("changes").put(record));
      transaction.oncomplete = () => { from.close(); to.close(); resolve(event.target.result.length); };
      transaction.onerror = () => reject(transaction.error);
    };
  });
})"""


def eventually(page, check, timeout=15, message="condition"):
    """Poll until check() is truthy; waiting through Playwright lets it deliver the page's events meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        page.wait_for_timeout(100)
    raise AssertionError(f"timed out waiting for {message}")


def camera_photo(path, seed):
    """A 12 MP photo as a phone camera writes it: full size, detailed (noise), high JPEG quality."""
    noise = Image.effect_noise((4000, 3000), 40 + seed).convert("RGB")
    tint = Image.new("RGB", (4000, 3000), (90 + 40 * seed, 120, 160))
    Image.blend(noise, tint, 0.5).save(path, "JPEG", quality=92)
    return path


def sign_in_and_open_card(page, crew, job):
    """Sign in, let the service worker install and keep the job's card, and open it under its control."""
    page.goto("/login")
    page.get_by_label("Email").fill(crew.email)
    page.get_by_label("Password").fill(factories.PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="My jobs").wait_for()
    eventually(page, lambda: page.evaluate("navigator.serviceWorker.controller !== null"), message="the service worker")
    eventually(page, lambda: page.evaluate(PAGE_CACHED, f"/crew/jobs/{job.id}"), message="the card kept for offline")
    page.get_by_role("link", name=job.number).click()
    page.get_by_role("heading", name=job.number).wait_for()


def banner(page):
    return page.locator("#offline-banner")


def queue_offline(page, photos=(), note=None, item=None, complete=False):
    """Do the work with no signal; each change lands in the 'Waiting on this phone' list."""
    waiting = page.locator("#offline-waiting li.offline-change")
    expected = waiting.count()
    if photos:
        page.set_input_files("input[type=file][name=photos]", [str(path) for path in photos])
        expected += len(photos)
        eventually(page, lambda: waiting.count() == expected, message="photos queued")
    if note:
        page.get_by_label("Add a note").fill(note)
        page.get_by_role("button", name="Save note").click()
        expected += 1
        eventually(page, lambda: waiting.count() == expected, message="note queued")
    if item:
        name, quantity = item
        page.get_by_label("Item").select_option(label=page.locator("#job-items option", has_text=name).inner_text().strip())
        page.get_by_label("Quantity").fill(quantity)
        page.get_by_role("button", name="Add item").click()
        expected += 1
        eventually(page, lambda: waiting.count() == expected, message="line item queued")
    if complete:
        page.get_by_role("link", name="Complete job").click()
        page.get_by_role("button", name="Complete job").click()
        expected += 1
        eventually(page, lambda: waiting.count() == expected, message="completion queued")
    return expected


def fresh(db, model, **where):
    db.session.expire_all()
    return db.session.query(model).filter_by(**where).all()


def test_offline_closeout_survives_a_reload_and_syncs_once(db, crew, phone, tmp_path, artifact_path, capsys):
    factories.template("Labor", 8500, unit="hour")
    job = factories.job(crew=[crew], scheduled_in=timedelta(0), scope="Sump pump in the crawl space: no signal.")
    originals = [camera_photo(tmp_path / "pump-before.jpg", 1), camera_photo(tmp_path / "pump-after.jpg", 2)]
    page = phone
    uploads, answers = [], []
    page.on("requestfinished", lambda request: request.method == "POST" and request.url.endswith("/photos")
            and uploads.append(int(request.all_headers()["content-length"])))
    page.on("response", lambda response: response.request.method == "POST" and "/crew/jobs/" in response.url
            and answers.append((response.url.rsplit("/", 1)[-1], response.status, response.headers.get("x-client-change"))))
    sign_in_and_open_card(page, crew, job)

    page.context.set_offline(True)
    assert queue_offline(page, photos=originals, note="Pump replaced, float switch tested",
                         item=("Labor", "2"), complete=True) == 5
    assert banner(page).inner_text() == "Offline: 5 changes waiting"
    page.screenshot(path=str(artifact_path("crew-offline-queued.png")), full_page=True)

    page.reload()  # still offline: the card comes from the service worker, the queue from IndexedDB
    page.get_by_role("heading", name=job.number).wait_for()
    assert banner(page).inner_text() == "Offline: 5 changes waiting"
    assert page.locator("#offline-waiting li.offline-change").count() == 5
    assert "Note: Pump replaced, float switch tested" in page.locator("#offline-waiting").inner_text()
    assert uploads == [] and fresh(db, Photo) == []

    page.context.set_offline(False)
    page.get_by_text("Completed by Casey Crew").wait_for(timeout=30_000)
    assert banner(page).count() == 0
    assert page.locator("#job-photos li.photo img").count() == 2
    assert "Pump replaced, float switch tested" in page.locator("#job-notes").inner_text()
    assert "Labor" in page.locator("#job-items").inner_text()
    page.screenshot(path=str(artifact_path("crew-offline-synced.png")), full_page=True)

    # In order, each acknowledged once.
    assert [(path, status) for path, status, _ in answers if status != 303] == [
        ("photos", 200), ("photos", 200), ("notes", 200), ("items", 200), ("complete", 200)]
    db.session.expire_all()
    job = db.session.get(Job, job.id)
    assert job.work_status == WorkStatus.COMPLETED and job.completed_by_id == crew.id
    assert len(fresh(db, Photo, job_id=job.id)) == 2
    assert [note.body for note in fresh(db, Note, job_id=job.id)] == ["Pump replaced, float switch tested"]
    assert [(line.description, str(line.quantity)) for line in fresh(db, JobLineItem, job_id=job.id)] == [("Labor", "2.000")]
    assert len(fresh(db, BillingTrigger, job_id=job.id)) == 1  # billing started, once
    assert len(fresh(db, CrewChange, job_id=job.id)) == 5

    # Scaled on the phone to the server's 1600 px web copy before it went up.
    assert len(uploads) == 2
    sizes = [(original.stat().st_size, sent) for original, sent in zip(originals, uploads)]
    for original_bytes, sent_bytes in sizes:
        assert sent_bytes < original_bytes / 4
    for photo in fresh(db, Photo, job_id=job.id):
        assert max(photo.width, photo.height) == 1600 and photo.content_type == "image/jpeg"
    with capsys.disabled():
        for original_bytes, sent_bytes in sizes:
            print(f"\nphoto upload: {original_bytes} bytes on the phone, {sent_bytes} bytes sent "
                  f"({100 * sent_bytes / original_bytes:.1f}%)")
    assert page.errors == []


def test_replaying_the_same_queue_twice_changes_nothing_the_second_time(db, crew, phone, tmp_path):
    factories.template("Labor", 8500, unit="hour")
    job = factories.job(crew=[crew], scheduled_in=timedelta(0))
    page = phone
    answers = []
    page.on("response", lambda response: response.request.method == "POST" and "/crew/jobs/" in response.url
            and answers.append(response.headers.get("x-client-change")))
    sign_in_and_open_card(page, crew, job)

    page.context.set_offline(True)
    queue_offline(page, photos=[camera_photo(tmp_path / "meter.jpg", 3)], note="Meter read 40213",
                  item=("Labor", "1"), complete=True)
    # What a phone would hold if the answers were lost after the server stored the changes: a copy of
    # the queue (photo blobs and all) in a database of the test's own, as the page reloads after syncing.
    page.evaluate(COPY_QUEUE, ["closeout-offline", "queue-copy"])
    page.context.set_offline(False)
    page.get_by_text("Completed by Casey Crew").wait_for(timeout=30_000)
    assert answers == ["applied"] * 4

    page.evaluate(COPY_QUEUE, ["queue-copy", "closeout-offline"])
    answers.clear()
    page.reload()  # the page load finds the same four changes queued and replays them
    eventually(page, lambda: len(answers) == 4, message="the second replay")
    eventually(page, lambda: banner(page).count() == 0, message="the queue to empty")

    assert answers == ["replayed"] * 4
    assert len(fresh(db, Photo, job_id=job.id)) == 1
    assert len(fresh(db, Note, job_id=job.id)) == 1
    assert len(fresh(db, JobLineItem, job_id=job.id)) == 1
    assert len(fresh(db, BillingTrigger, job_id=job.id)) == 1
    assert page.errors == []


def test_a_reopen_meanwhile_is_shown_on_the_card_and_nothing_is_lost(db, crew, office, phone, tmp_path, artifact_path):
    job = factories.job(crew=[crew], scheduled_in=timedelta(0), items=[("Labor", "1", 8500)])
    page = phone
    sign_in_and_open_card(page, crew, job)

    page.context.set_offline(True)
    queue_offline(page, photos=[camera_photo(tmp_path / "a.jpg", 4), camera_photo(tmp_path / "b.jpg", 5)],
                  note="Left the access panel open for the inspector")
    # Meanwhile a teammate completes the job and the office reopens it.
    complete_job(job, by=Actor.for_user(crew))
    reopen_job(job, by=Actor.for_user(office), reason="Customer wants the hall tap done too")
    db.session.commit()

    page.context.set_offline(False)
    conflict = page.locator("#offline-waiting [role=alert]")
    conflict.wait_for()
    assert conflict.inner_text().startswith(
        "The office reopened this job (Customer wants the hall tap done too) after this phone loaded it. "
        "Your 2 photos and note are kept on this phone.")
    assert page.locator("#offline-waiting li.offline-change").count() == 3
    assert "needs you" in banner(page).inner_text()
    page.screenshot(path=str(artifact_path("crew-offline-conflict.png")), full_page=True)
    assert fresh(db, Photo) == [] and fresh(db, Note) == []

    page.reload()  # the local data stays through a reload too
    page.locator("#offline-waiting [role=alert]").wait_for()
    assert page.locator("#offline-waiting li.offline-change").count() == 3

    page.get_by_role("button", name="Try again").click()
    eventually(page, lambda: page.locator("#offline-waiting").count() == 0, message="the retried changes to go")
    assert len(fresh(db, Photo, job_id=job.id)) == 2
    assert [note.body for note in fresh(db, Note, job_id=job.id)] == ["Left the access panel open for the inspector"]
    # The browser logs the refused first try; nothing else may go wrong.
    assert [error for error in page.errors if "status of 409" not in error] == []


def test_a_note_whose_answer_was_lost_is_queued_and_stored_once(db, crew, phone):
    """Signal that drops mid-request: the server stored the note, the phone never heard back."""
    job = factories.job(crew=[crew], scheduled_in=timedelta(0))
    page = phone
    answers = []
    page.on("response", lambda response: response.request.method == "POST" and "/crew/jobs/" in response.url
            and answers.append(response.headers.get("x-client-change")))
    sign_in_and_open_card(page, crew, job)

    lost = []

    def lose_the_first_answer(route):
        if lost:
            route.continue_()
            return
        lost.append(route.fetch())  # reaches the server, which stores the note
        route.abort("internetdisconnected")

    page.route("**/notes", lose_the_first_answer)
    page.get_by_label("Add a note").fill("Breaker 14 relabelled")
    page.get_by_role("button", name="Save note").click()
    # Queued under the id it was sent with, and sent again at once: the server answers from the first time.
    eventually(page, lambda: answers == ["replayed"], message="the replay")
    page.locator("#job-notes", has_text="Breaker 14 relabelled").wait_for()
    assert page.locator("#offline-waiting").count() == 0
    assert page.get_by_label("Add a note").input_value() == ""
    assert [note.body for note in fresh(db, Note, job_id=job.id)] == ["Breaker 14 relabelled"]
    # The browser and htmx log the failed request; nothing else may go wrong.
    assert [error for error in page.errors
            if "ERR_INTERNET_DISCONNECTED" not in error and not error.startswith(("htmx:afterRequest", "htmx:sendError"))] == []


def test_a_job_given_to_someone_else_meanwhile_keeps_the_note_until_discarded(db, crew, other_crew, office, phone):
    job = factories.job(crew=[crew], scheduled_in=timedelta(0))
    page = phone
    sign_in_and_open_card(page, crew, job)

    page.context.set_offline(True)
    queue_offline(page, note="Gate code changed to 2290")
    assign_crew(job, [other_crew], by=Actor.for_user(office))
    db.session.commit()
    page.context.set_offline(False)

    conflict = page.locator("#offline-waiting [role=alert]")
    conflict.wait_for()
    assert conflict.inner_text().startswith("This job is no longer assigned to you: the office may have given it "
                                            "to someone else. Your note is kept on this phone.")
    assert "Note: Gate code changed to 2290" in page.locator("#offline-waiting").inner_text()
    assert fresh(db, Note) == []

    page.get_by_role("button", name="Discard").click()  # the first tap only asks
    page.get_by_role("button", name="Discard 1 change for good").click()
    page.locator("#offline-waiting").wait_for(state="detached")
    assert banner(page).count() == 0
    assert page.evaluate("window.closeoutOffline.count()") == 0
    assert fresh(db, Note) == [] and fresh(db, CrewChange) == []


def test_chromium_finds_the_crew_app_installable(db, crew, phone):
    job = factories.job(crew=[crew], scheduled_in=timedelta(0))
    page = phone
    sign_in_and_open_card(page, crew, job)
    page.reload()  # a whole page load, with the manifest link in its head
    page.get_by_role("heading", name=job.number).wait_for()
    devtools = page.context.new_cdp_session(page)
    manifest = devtools.send("Page.getAppManifest")
    assert manifest["url"].endswith("/crew/manifest.webmanifest") and manifest["errors"] == []
    errors = devtools.send("Page.getInstallabilityErrors")["installabilityErrors"]
    # Playwright's contexts are incognito ones, where Chromium installs nothing; that is the only objection.
    assert [error["errorId"] for error in errors] == ["in-incognito"]


def test_signing_out_empties_the_offline_store(db, crew, phone):
    job = factories.job(crew=[crew], scheduled_in=timedelta(0), scope="Secret gate code 4471")
    page = phone
    sign_in_and_open_card(page, crew, job)
    before = page.evaluate(OFFLINE_STORE)
    assert before["workers"] == 1 and any(name.startswith("closeout-pages-") for name in before["caches"])

    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("button", name="Sign in").wait_for()
    assert page.evaluate(OFFLINE_STORE) == {"caches": [], "databases": [], "workers": 0}

    page.context.set_offline(True)
    with pytest.raises(Exception, match="ERR_INTERNET_DISCONNECTED"):
        page.goto(f"/crew/jobs/{job.id}")
    assert "4471" not in settled_content(page)  # the browser's own offline page, not the saved card


def settled_content(page, attempts=50):
    """The page's HTML once Chromium has finished swapping in its own error page."""
    for _ in range(attempts):
        page.wait_for_load_state()
        try:
            return page.content()
        except PlaywrightError:  # "the page is navigating": the error page is still coming in
            page.wait_for_timeout(100)
    raise AssertionError("the page never settled")


def test_the_next_person_on_the_phone_never_gets_the_saved_pages(db, crew, other_crew, phone):
    """A session that ended without signing out: the first crew page of someone else drops the saved ones."""
    job = factories.job(crew=[crew], scheduled_in=timedelta(0), scope="Secret gate code 4471")
    page = phone
    sign_in_and_open_card(page, crew, job)
    assert page.evaluate("navigator.serviceWorker.getRegistration().then(r => new URL(r.scope).pathname)") == "/crew/"

    page.context.clear_cookies()  # the session is gone; the caches are not
    page.goto("/crew/jobs")
    page.get_by_label("Email").fill(other_crew.email)
    page.get_by_label("Password").fill(factories.PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="My jobs").wait_for()
    eventually(page, lambda: page.evaluate(PAGE_CACHED, "/crew/jobs"), message="the new user's page kept")
    assert page.evaluate(PAGE_CACHED, f"/crew/jobs/{job.id}") is False
    assert [name for name in page.evaluate(OFFLINE_STORE)["caches"] if name.startswith("closeout-pages-")] == [
        name for name in page.evaluate(OFFLINE_STORE)["caches"] if name.endswith(f"-user-{other_crew.id}")]

    page.context.set_offline(True)
    page.goto(f"/crew/jobs/{job.id}")
    assert "This page is not saved on this phone." in page.locator("main").inner_text()
    assert "4471" not in page.content()


def test_the_logout_header_alone_clears_the_store_in_chromium(db, crew, phone):
    """Clear-Site-Data backs up offline.js: a sign-out posted without the script still empties it."""
    job = factories.job(crew=[crew], scheduled_in=timedelta(0))
    page = phone
    sign_in_and_open_card(page, crew, job)
    page.evaluate("""() => {
      const form = document.querySelector("form[action$='/logout']");
      form.submit();  // no submit event: offline.js never sees it
    }""")
    page.get_by_role("button", name="Sign in").wait_for()
    store = eventually(page, lambda: (lambda found: found if not found["caches"] and found["workers"] == 0 else None)(
        page.evaluate(OFFLINE_STORE)), message="the store to be cleared")
    assert store["caches"] == [] and store["workers"] == 0
