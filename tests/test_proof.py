"""The proof-of-work PDF: what it shows, the fingerprint printed on it, what it may read, and its size."""
import io
import re
import socket
from datetime import datetime, timezone

import pytest
from PIL import Image, ImageDraw
from pypdf import PdfReader
from werkzeug.datastructures import FileStorage
from xhtml2pdf.config.resources import PERMISSIVE_POLICY
from xhtml2pdf.files import pisaFileObject

from bench.samples import jpeg_bytes, phone_exif, synthetic_scene
from portal.audit.services import Actor
from portal.billing import pipeline
from portal.billing.proof import ProofResources, fingerprint, html_to_pdf, proof_packet, render_proof
from portal.jobs.services import add_note, complete_job, reopen_job, update_line_item
from portal.photos.derivatives import ensure_derivatives, web_key
from portal.photos.services import add_photo
from portal.photos.storage import get_storage
from tests import factories

HOSTILE_NOTE = '<img src="file:///etc/passwd"> & <b>bold</b>'
LETTER = (612, 792)


def small_photo(colour, size=(2000, 1500), **save_options):
    return jpeg_bytes(Image.new("RGB", size, colour), **save_options)


@pytest.fixture(scope="module")
def scene():
    """One 12 MP phone-like scene, made once: variants of it are cheap, a new one is not."""
    return synthetic_scene(seed=4)


def twelve_megapixel_variant(scene, number):
    """A distinct 12 MP JPEG (uploads refuse duplicates) that compresses like a real photo."""
    image = scene.copy()
    ImageDraw.Draw(image).rectangle((number * 300, 100, number * 300 + 250, 400), fill=(number * 25, 200, 90))
    return jpeg_bytes(image, exif=phone_exif(taken=f"2026:11:02 14:{number:02d}:00").tobytes())


def completed_job(db, crew, photos, *, notes=(), items=None):
    """A job with a site, items, notes and photos, completed by the crew: (job, its billing trigger)."""
    client = factories.client(name="Maple Property Group")
    site = factories.site(client, address="742 Evergreen Terrace, Springfield")
    job = factories.job(client, crew=[crew], site=site, scope="Replace the kitchen faucet\nTest for leaks",
                        items=items or [("Faucet cartridge", "2", 1250), ("Labor", "1.5", 8500)])
    by = Actor.for_user(crew)
    for body in notes:
        add_note(job, body, by=by)
    for number, content in enumerate(photos, start=1):
        add_photo(job, FileStorage(io.BytesIO(content), f"IMG_{number:04d}.jpg"), by=by)
    db.session.commit()
    complete_job(job, by=by)
    db.session.commit()
    return job, job.billing_triggers[-1]


@pytest.fixture
def network_attempts(monkeypatch):
    """Every attempt to resolve a host or open a connection, each refused.

    Recorded rather than only raised: xhtml2pdf logs and swallows a failed fetch.
    """
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("no network while rendering a proof")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def pdf_text(pdf):
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def embedded_images(pdf):
    """(width, height) of every image drawn on the PDF's pages."""
    sizes = []
    for page in PdfReader(io.BytesIO(pdf)).pages:
        xobjects = page["/Resources"].get("/XObject", {})
        for ref in xobjects.values():
            image = ref.get_object()
            if image["/Subtype"] == "/Image":
                sizes.append((image["/Width"], image["/Height"]))
    return sizes


@pytest.fixture
def two_photo_job(app, db, crew, monkeypatch):
    monkeypatch.setitem(app.config, "BUSINESS_NAME", "Evergreen Plumbing & Drains")
    monkeypatch.setitem(app.config, "BUSINESS_TIMEZONE", "America/Chicago")
    photos = [
        small_photo("navy", exif=phone_exif(taken="2026:11:02 14:30:00", offset="-05:00").tobytes()),
        small_photo("olive", size=(1500, 2000)),
    ]
    return completed_job(db, crew, photos, notes=[HOSTILE_NOTE, "Shut-off valve was seized"])


def test_the_proof_shows_the_job_the_items_the_photos_and_the_fingerprint(two_photo_job, crew):
    job, trigger = two_photo_job

    pdf = render_proof(trigger)

    reader = PdfReader(io.BytesIO(pdf))
    assert tuple(round(value) for value in reader.pages[0].mediabox[2:]) == LETTER
    text = pdf_text(pdf)
    for expected in ("Evergreen Plumbing & Drains", job.number, "Maple Property Group",
                     "742 Evergreen Terrace, Springfield", crew.name, "Replace the kitchen faucet", "Test for leaks",
                     "Faucet cartridge", "Labor", "$12.50", "$127.50", "$152.50", "Shut-off valve was seized",
                     "Nov 2, 2026 1:30 PM CST"):  # 14:30 at UTC-5 is 13:30 in Chicago
        assert expected in text
    assert HOSTILE_NOTE in text  # printed as the text that was typed, not read as markup
    assert f"Fingerprint (SHA-256): {fingerprint(proof_packet(trigger))}" in text
    assert "capture time not recorded" in text  # the second photo has no EXIF time
    photos = [size for size in embedded_images(pdf) if max(size) == 1600]
    assert sorted(photos) == [(1200, 1600), (1600, 1200)]  # web copies, made for the PDF where missing
    assert len(embedded_images(pdf)) == len(job.photos) + 1  # and the logo


def test_the_fingerprint_is_on_every_page(app, db, crew, monkeypatch):
    notes = [f"Visit note {number}: " + "checked every joint under the sink. " * 12 for number in range(30)]
    job, trigger = completed_job(db, crew, [], notes=notes)

    pdf = render_proof(trigger)

    pages = PdfReader(io.BytesIO(pdf)).pages
    stamp = f"Fingerprint (SHA-256): {fingerprint(proof_packet(trigger))}"
    assert len(pages) > 1 and all(stamp in page.extract_text() for page in pages)
    assert f"Page {len(pages)} of {len(pages)}" in pages[-1].extract_text()


def test_rendering_reads_only_our_photos_and_logo_and_never_the_network(two_photo_job, monkeypatch, network_attempts):
    job, trigger = two_photo_job
    add_note(job, '<img src="http://169.254.169.254/latest/meta-data/"><link rel="stylesheet" href="/etc/passwd">',
             by=Actor.system("tests"))
    resolved = []
    real_resolve = ProofResources.__call__

    def spy(self, uri, rel=None):
        answer = real_resolve(self, uri, rel)
        resolved.append((uri, answer))
        return answer

    monkeypatch.setattr(ProofResources, "__call__", spy)

    pdf = render_proof(trigger)

    storage = get_storage()
    photo_uris = {f"photo:{photo.id}": str(storage.path(web_key(photo.storage_key))) for photo in job.photos}
    assert {uri for uri, _ in resolved} == {"logo:", *photo_uris}
    assert all(answer == photo_uris[uri] for uri, answer in resolved if uri != "logo:")
    assert "169.254.169.254" in pdf_text(pdf)  # the note, as text
    assert network_attempts == []


def test_every_other_uri_reads_nothing_even_without_the_resource_policy(two_photo_job, network_attempts, subtests):
    job, _ = two_photo_job
    resources = ProofResources(job)
    for uri in ("file:///etc/passwd", "/etc/passwd", "../../../../../../etc/passwd", "/etc/hostname",
                "http://169.254.169.254/latest/meta-data/", "https://example.com/logo.png", "photo:", "photo:abc",
                "photo:../../etc/passwd", f"photo:{job.photos[0].id + 1000}", "logo:../passwd", "", None):
        with subtests.test(uri=uri):
            # PERMISSIVE_POLICY: the link_callback alone must stop it (xhtml2pdf reads the original
            # URI when a callback answers "", which is why ours answers an empty data: URI).
            assert not pisaFileObject(uri, callback=resources, policy=PERMISSIVE_POLICY).getData()
    ensure_derivatives(job.photos[0])
    photo = pisaFileObject(f"photo:{job.photos[0].id}", callback=resources, policy=PERMISSIVE_POLICY).getData()
    assert photo.startswith(b"\xff\xd8")  # while our own URIs do resolve
    assert network_attempts == []
    assert pisaFileObject("logo:", callback=resources, policy=PERMISSIVE_POLICY).getData().startswith(b"\x89PNG")


def test_another_jobs_photo_and_files_outside_storage_never_reach_the_pdf(two_photo_job, db, crew, tmp_path):
    job, _ = two_photo_job
    ensure_derivatives(job.photos[0])
    other_job, _ = completed_job(db, crew, [small_photo("maroon")])
    other = other_job.photos[0]
    ensure_derivatives(other)
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(small_photo("black"))
    storage = get_storage()
    # Markup no template of ours writes: what would get through if escaping ever failed.
    hostile = f"""<html><body>
      <img src="photo:{other.id}"><img src="{storage.path(web_key(other.storage_key))}">
      <img src="{outside}"><img src="file://{outside}"><img src="data:image/jpeg;base64,/9j/4AAQ">
      <img src="photo:{job.photos[0].id}"></body></html>"""

    pdf = html_to_pdf(hostile, ProofResources(job))

    assert embedded_images(pdf) == [(1600, 1200)]  # this job's own photo, and nothing else


def test_ten_12_megapixel_photos_make_a_pdf_under_5_mb(app, db, crew, scene):
    _, trigger = completed_job(db, crew, [twelve_megapixel_variant(scene, number) for number in range(10)])

    pipeline.prepare_proof(trigger)

    pdf = get_storage().path(trigger.proof_pdf_key).read_bytes()
    print(f"\nproof PDF with 10 photos of 12 MP: {len(pdf) / 1e6:.2f} MB")
    assert len(pdf) < 5 * 1024 * 1024
    assert len([size for size in embedded_images(pdf) if size == (1600, 1200)]) == 10


def test_the_stored_fingerprint_is_the_packets_and_changes_with_an_item(app, db, crew, office, monkeypatch):
    job, trigger = completed_job(db, crew, [small_photo("teal")])

    pipeline.prepare_proof(trigger)

    db.session.refresh(trigger)
    first = trigger.proof_sha256
    assert re.fullmatch(r"[0-9a-f]{64}", first) and first == fingerprint(proof_packet(trigger))
    assert first in pdf_text(get_storage().path(trigger.proof_pdf_key).read_bytes())
    monkeypatch.setitem(app.config, "BUSINESS_TIMEZONE", "Asia/Tokyo")  # how times print is not part of the record
    assert fingerprint(proof_packet(trigger)) == first

    by = Actor.for_user(office)
    reopen_job(job, by=by, reason="Customer asked for a second cartridge")
    update_line_item(job.line_items[0], by=by, quantity="3")
    complete_job(job, by=by)
    db.session.commit()
    again = job.billing_triggers[-1]
    pipeline.prepare_proof(again)

    assert again.proof_sha256 != first
    assert "$165.00" in pdf_text(get_storage().path(again.proof_pdf_key).read_bytes())


def test_the_packet_holds_the_record_in_plain_values(two_photo_job, crew):
    job, trigger = two_photo_job

    packet = proof_packet(trigger)

    assert packet["line_items"] == [
        {"description": "Faucet cartridge", "quantity": "2", "unit": "each", "unit_amount": 1250, "amount": 2500,
         "tax_amount": 0},
        {"description": "Labor", "quantity": "1.5", "unit": "each", "unit_amount": 8500, "amount": 12750,
         "tax_amount": 0},
    ]
    assert (packet["subtotal"], packet["tax"], packet["total"], packet["currency"]) == (15250, 0, 15250, "usd")
    assert packet["crew"] == [crew.name] and packet["completed_by"] == crew.name
    assert [note["body"] for note in packet["notes"]] == [HOSTILE_NOTE, "Shut-off valve was seized"]
    assert packet["photos"][0] == {"id": job.photos[0].id, "sha256": job.photos[0].sha256,
                                   "taken_at": datetime(2026, 11, 2, 19, 30, tzinfo=timezone.utc).isoformat()}
    assert packet["completed_at"] == job.completed_at.isoformat()
