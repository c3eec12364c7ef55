"""A crew member closes out a job on a phone: photo, two line items, completion."""
from datetime import timedelta

import pytest
from PIL import Image

from portal.audit.services import Actor
from portal.billing.models import BillingTrigger, TriggerStatus
from portal.jobs.models import Job, Note, Photo, WorkStatus
from portal.jobs.services import complete_job
from tests import factories

pytestmark = pytest.mark.browser

TAP_TARGETS = "main button, main a.button, main select, main input:not([type=hidden]):not([type=file]), main textarea, .topnav a, .topnav button"


def small_targets(page):
    """Visible controls shorter than 44 px: too small for a thumb."""
    return page.eval_on_selector_all(TAP_TARGETS, """elements => elements
        .filter(element => element.offsetParent !== null)
        .map(element => [element.outerHTML.slice(0, 80), element.getBoundingClientRect().height])
        .filter(([, height]) => height < 44)""")


def assert_fits_the_screen(page):
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"page is {overflow}px wider than the 390px screen"


def test_crew_closes_out_a_job_on_a_phone(db, crew, phone, tmp_path, artifact_path):
    factories.template("Labor", 8500, unit="hour")
    factories.template("Faucet cartridge", 2499, unit="each")
    client_row = factories.client(name="Maple Court Apartments")
    site = factories.site(client_row, name="Building B", address="1200 Maple Court, Unit 4B, Springfield")
    job = factories.job(client_row, crew=[crew], site=site, scheduled_in=timedelta(0),
                        scope="Kitchen faucet drips; replace the cartridge and check the shut-off valve.",
                        customer_notes="Tenant works nights: knock quietly. Cat must stay inside.")
    photo_file = tmp_path / "faucet.jpg"
    Image.new("RGB", (1600, 1200), (40, 110, 160)).save(photo_file, "JPEG", quality=85)
    page = phone

    page.goto("/login")
    page.get_by_label("Email").fill(crew.email)
    page.get_by_label("Password").fill(factories.PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="My jobs").wait_for()
    assert_fits_the_screen(page)
    page.screenshot(path=str(artifact_path("crew-my-jobs.png")), full_page=True)

    page.get_by_role("link", name=job.number).click()
    page.get_by_role("heading", name=job.number).wait_for()
    assert page.get_by_role("link", name="Open in maps").is_visible()
    assert_fits_the_screen(page)
    assert small_targets(page) == []

    page.set_input_files("input[type=file][name=photos]", str(photo_file))
    thumbnail = page.locator("#job-photos li.photo img")
    thumbnail.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumbnail.element_handle())

    for name, quantity in (("Labor", "2.5"), ("Faucet cartridge", "2")):
        page.get_by_label("Item").select_option(label=page.locator("#job-items option", has_text=name).inner_text().strip())
        page.get_by_label("Quantity").fill(quantity)
        page.get_by_role("button", name="Add item").click()
        page.locator("#job-items .line-description", has_text=name).wait_for()
    assert page.locator("#job-items [data-job-total]").inner_text() == "$262.48"
    assert_fits_the_screen(page)
    assert small_targets(page) == []
    page.screenshot(path=str(artifact_path("crew-job-editing.png")), full_page=True)

    page.get_by_role("link", name="Complete job").click()
    page.get_by_role("heading", name=f"Complete {job.number}?").wait_for()
    page.screenshot(path=str(artifact_path("crew-job-confirm.png")), full_page=True)
    assert "$262.48" in page.locator("#job-complete .grand").inner_text()
    page.get_by_role("button", name="Complete job").click()
    page.get_by_text("Completed by Casey Crew").wait_for()

    card = page.locator("main").inner_text()
    assert "Completed" in card and "Billing pending" in card
    assert "Labor" in card and "Faucet cartridge" in card and "$262.48" in card
    assert page.locator("#job-photos li.photo img").count() == 1
    assert page.get_by_role("button", name="Add item").count() == 0
    assert_fits_the_screen(page)
    screenshot = artifact_path("crew-job-completed.png")
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"screenshot: {screenshot}")
    assert page.errors == []

    db.session.expire_all()
    job = db.session.get(Job, job.id)
    assert job.work_status == WorkStatus.COMPLETED and job.completed_by_id == crew.id
    assert [photo.original_filename for photo in db.session.query(Photo).filter_by(job_id=job.id)] == ["faucet.jpg"]
    triggers = db.session.query(BillingTrigger).filter_by(job_id=job.id).all()
    assert [trigger.status for trigger in triggers] == [TriggerStatus.PENDING]
    assert job.totals.total == 26248


def test_refusals_show_in_place_when_the_job_was_completed_elsewhere(db, crew, phone):
    job = factories.job(crew=[crew], scheduled_in=timedelta(0), items=[("Labor", "1", 8500)])
    card = phone
    card.goto("/login")
    card.get_by_label("Email").fill(crew.email)
    card.get_by_label("Password").fill(factories.PASSWORD)
    card.get_by_role("button", name="Sign in").click()
    card.goto(f"/crew/jobs/{job.id}")
    card.get_by_role("heading", name=job.number).wait_for()
    confirmation = card.context.new_page()
    confirmation.goto(f"/crew/jobs/{job.id}/complete")

    # A teammate completes the job while this phone still shows the open card and the confirmation.
    complete_job(job, by=Actor.for_user(crew))
    db.session.commit()

    card.get_by_label("Add a note").fill("Left the old cartridge on the counter")
    card.get_by_role("button", name="Save note").click()
    card.locator("#job-notes [role=alert]", has_text="This job is completed; ask the office to reopen it.").wait_for()
    assert card.get_by_role("button", name="Save note").count() == 0  # the notes box came back read-only

    confirmation.get_by_role("button", name="Complete job").click()
    confirmation.get_by_role("alert").filter(has_text="This job is already completed.").wait_for()

    db.session.expire_all()
    assert db.session.query(Note).count() == 0
    assert db.session.query(BillingTrigger).count() == 1
