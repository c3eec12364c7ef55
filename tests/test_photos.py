"""Photos: what an upload must be to be kept, how it is stored, served and shrunk, and who may see it."""
import io
import struct
import zlib
from datetime import datetime, timezone
from pathlib import Path

import pillow_heif
import pytest
from PIL import ExifTags, Image
from werkzeug.datastructures import FileStorage
from werkzeug.test import stream_encode_multipart

from portal.audit.services import Actor
from portal.jobs.models import Photo, WorkStatus
from portal.jobs.services import complete_job
from portal.photos.derivatives import thumbnail_key
from portal.photos.storage import InvalidStorageKey, LocalStorage, get_storage
from tests import factories


# --- sample files ---------------------------------------------------------------------------------

def image_bytes(fmt, size=(400, 300), color="red", **save_options):
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt, **save_options)
    return buffer.getvalue()


def heic_bytes(size=(96, 64)):
    buffer = io.BytesIO()
    pillow_heif.from_pillow(Image.new("RGB", size, "blue")).save(buffer, quality=50)
    return buffer.getvalue()


def jpeg_with_gps_and_orientation():
    """A 400×200 JPEG whose EXIF says: rotate 90° to show it, taken at a place, at a time, by a camera."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "PhoneCo"
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = "2026:11:02 14:30:00"
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.OffsetTimeOriginal] = "-05:00"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (40.0, 26.0, 46.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "W"
    gps[ExifTags.GPS.GPSLongitude] = (79.0, 58.0, 56.0)
    return image_bytes("JPEG", size=(400, 200), exif=exif.tobytes(), comment=b"shot at 12 Elm St")


def png_claiming_huge_dimensions(width=100_000, height=100_000):
    """A few hundred bytes whose header claims ten billion pixels: a decompression bomb, cheaply."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def upload(client, job, files):
    """POST files to the crew upload endpoint as crew.js does (one htmx-style request)."""
    # Encoded in memory: the test client would spool a big body to a temp file it never closes.
    body, length, boundary = stream_encode_multipart(
        {"photos": [FileStorage(io.BytesIO(content), name) for name, content in files]}, use_tempfile=False)
    return client.htmx("POST", f"/crew/jobs/{job.id}/photos", input_stream=body, content_length=length,
                       content_type=f"multipart/form-data; boundary={boundary}")


def stored_files(app):
    return {path for path in Path(app.config["UPLOAD_DIR"]).rglob("*") if path.is_file()}


def fetch(client, url):
    with client.get(url) as response:
        return response.status_code, response.headers, response.get_data()


@pytest.fixture
def job(db, crew):
    return factories.job(crew=[crew])


@pytest.fixture
def crew_client(login, crew):
    return login(crew)


# --- good uploads ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "make", "content_type", "size"), [
    ("porch.jpg", lambda: image_bytes("JPEG"), "image/jpeg", (400, 300)),
    ("porch.png", lambda: image_bytes("PNG"), "image/png", (400, 300)),
    ("porch.webp", lambda: image_bytes("WEBP"), "image/webp", (400, 300)),
    ("IMG_0001.HEIC", heic_bytes, "image/heic", (96, 64)),
])
def test_a_real_photo_is_kept_and_gets_a_jpeg_thumbnail(app, db, job, crew, crew_client, name, make, content_type, size):
    content = make()
    response = upload(crew_client, job, [(name, content)])

    assert response.status_code == 200
    photo = db.session.scalars(db.select(Photo).where(Photo.job_id == job.id)).one()
    assert f'id="photo-{photo.id}"' in response.get_data(as_text=True)
    assert (photo.content_type, photo.original_filename, (photo.width, photo.height)) == (content_type, name, size)
    assert photo.size_bytes == len(content) and photo.uploaded_by_id == crew.id
    assert get_storage().path(photo.storage_key).read_bytes() == content
    assert name not in photo.storage_key  # server-made names only
    db.session.refresh(job)
    assert job.work_status == WorkStatus.IN_PROGRESS

    status, headers, original = fetch(crew_client, f"/photos/{photo.id}")
    assert (status, headers["Content-Type"], original) == (200, content_type, content)
    status, headers, thumb = fetch(crew_client, f"/photos/{photo.id}/thumb")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert "private" in headers["Cache-Control"] and headers["X-Content-Type-Options"] == "nosniff"
    with Image.open(io.BytesIO(thumb)) as shown:
        assert shown.format == "JPEG" and max(shown.size) <= 320


def test_thumbnail_is_upright_and_carries_no_metadata(db, job, crew_client):
    upload(crew_client, job, [("gps.jpg", jpeg_with_gps_and_orientation())])
    photo = db.session.scalars(db.select(Photo).where(Photo.job_id == job.id)).one()
    assert (photo.width, photo.height) == (200, 400)  # recorded as it is shown, upright
    assert photo.taken_at == datetime(2026, 11, 2, 19, 30, tzinfo=timezone.utc)

    status, _, thumb = fetch(crew_client, f"/photos/{photo.id}/thumb")
    assert status == 200
    with Image.open(io.BytesIO(thumb)) as shown:
        assert shown.size == (160, 320)  # the EXIF rotation was applied
        assert not shown.getexif() and "exif" not in shown.info and "comment" not in shown.info
        assert "icc_profile" not in shown.info
    assert b"Exif" not in thumb and b"PhoneCo" not in thumb and b"Elm St" not in thumb
    assert get_storage().exists(thumbnail_key(photo.storage_key))  # cached for the next request


def test_taken_at_without_an_offset_is_read_in_the_business_timezone(app, db, job, crew_client, monkeypatch):
    monkeypatch.setitem(app.config, "BUSINESS_TIMEZONE", "America/Chicago")
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = "2026:07:04 09:15:00"
    upload(crew_client, job, [("noon.jpg", image_bytes("JPEG", exif=exif.tobytes()))])
    photo = db.session.scalars(db.select(Photo).where(Photo.job_id == job.id)).one()
    assert photo.taken_at == datetime(2026, 7, 4, 14, 15, tzinfo=timezone.utc)  # CDT is UTC-5


def test_a_photo_without_exif_has_no_taken_at(db, job, crew_client):
    upload(crew_client, job, [("plain.jpg", image_bytes("JPEG"))])
    assert db.session.scalars(db.select(Photo.taken_at).where(Photo.job_id == job.id)).one() is None


def test_png_transparency_becomes_white_in_the_thumbnail(db, job, crew_client):
    buffer = io.BytesIO()
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(buffer, "PNG")
    upload(crew_client, job, [("clear.png", buffer.getvalue())])
    photo = db.session.scalars(db.select(Photo).where(Photo.job_id == job.id)).one()
    _, _, thumb = fetch(crew_client, f"/photos/{photo.id}/thumb")
    with Image.open(io.BytesIO(thumb)) as shown:
        assert shown.convert("RGB").getpixel((10, 10)) == (255, 255, 255)


# --- bad uploads ----------------------------------------------------------------------------------

BAD_FILES = [
    ("invoice.jpg", b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n", "is not a photo (JPEG, PNG, WebP or HEIC)"),
    ("notes.jpg", b"just some text that is not an image at all\n", "is not a photo (JPEG, PNG, WebP or HEIC)"),
    ("drawing.png", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "is not a photo"),
    ("scan.jpg", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "is not a photo"),
    ("layers.jpg", b"8BPS\x00\x01" + b"\x00" * 40, "is not a photo"),
    ("funny.gif", image_bytes("GIF"), "is not a photo"),
    ("tiny.bmp", image_bytes("BMP"), "is not a photo"),
    ("avatar.avif", b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf", "is not a photo"),
    ("cut.jpg", image_bytes("JPEG", size=(600, 400))[:900], "is damaged or incomplete"),
    ("cut.png", image_bytes("PNG", size=(600, 400))[:120], "is damaged or incomplete"),
    ("cut.heic", heic_bytes((256, 256))[:300], "is damaged or incomplete"),
    ("garbage.jpg", b"\xff\xd8\xff\xe0" + b"\x13" * 500, "is damaged or incomplete"),
    ("bomb.png", png_claiming_huge_dimensions(), "has too many pixels"),
    ("", b"", None),  # an empty file field: ignored, so "choose a photo"
]


def test_a_bad_file_is_refused_by_name_and_changes_nothing(app, db, job, crew_client, subtests):
    upload(crew_client, job, [("keep.jpg", image_bytes("JPEG"))])
    kept = db.session.scalars(db.select(Photo).where(Photo.job_id == job.id)).one()
    kept_bytes = get_storage().path(kept.storage_key).read_bytes()

    for name, content, message in BAD_FILES:
        with subtests.test(msg=name or "empty file field"):
            files_before = stored_files(app)

            response = upload(crew_client, job, [(name, content)])

            page = response.get_data(as_text=True)
            if message is None:
                assert response.status_code == 400 and "Choose at least one photo." in page
            else:
                assert response.status_code == 422
                assert f"{name} {message}" in page
            assert db.session.scalars(db.select(Photo.id).where(Photo.job_id == job.id)).all() == [kept.id]
            assert get_storage().path(kept.storage_key).read_bytes() == kept_bytes
            assert stored_files(app) == files_before


def test_oversized_upload_is_refused_before_it_is_read_whole(app, db, job, crew_client, monkeypatch):
    monkeypatch.setitem(app.config, "PHOTO_MAX_BYTES", 20 * 1024 * 1024)
    big = image_bytes("PNG", size=(300, 300)) + b"\x00" * (20 * 1024 * 1024)
    response = upload(crew_client, job, [("huge.png", big)])
    assert response.status_code == 422
    assert "huge.png is larger than 20 MB." in response.get_data(as_text=True)

    monkeypatch.setitem(app.config, "PHOTO_MAX_BYTES", 2048)
    response = upload(crew_client, job, [("medium.jpg", image_bytes("JPEG", size=(800, 800), quality=95))])
    assert response.status_code == 422 and "medium.jpg is larger than 2 KB." in response.get_data(as_text=True)
    assert db.session.query(Photo).count() == 0


def test_pixel_cap_is_checked_before_decoding(app, db, job, crew_client, monkeypatch):
    monkeypatch.setitem(app.config, "PHOTO_MAX_PIXELS", 100 * 100)
    response = upload(crew_client, job, [("wide.jpg", image_bytes("JPEG", size=(101, 100)))])
    assert response.status_code == 422 and "wide.jpg has too many pixels." in response.get_data(as_text=True)
    response = upload(crew_client, job, [("fits.jpg", image_bytes("JPEG", size=(100, 100)))])
    assert response.status_code == 200


def test_multi_file_upload_keeps_the_good_and_reports_the_bad(app, db, job, crew_client):
    response = crew_client.post_form(f"/crew/jobs/{job.id}/photos", {"photos": [
        (io.BytesIO(image_bytes("JPEG")), "good.jpg"),
        (io.BytesIO(b"%PDF-1.4 nope"), "kitchen.jpg"),
        (io.BytesIO(image_bytes("PNG", color="green")), "also-good.png"),
    ]}, content_type="multipart/form-data")

    assert response.status_code == 303
    names = db.session.scalars(db.select(Photo.original_filename).where(Photo.job_id == job.id).order_by(Photo.id)).all()
    assert names == ["good.jpg", "also-good.png"]
    page = crew_client.get(response.headers["Location"]).get_data(as_text=True)
    assert "kitchen.jpg is not a photo (JPEG, PNG, WebP or HEIC)." in page
    assert "2 photos added." in page


def test_the_same_photo_twice_is_refused(db, job, crew_client):
    content = image_bytes("JPEG")
    assert upload(crew_client, job, [("a.jpg", content)]).status_code == 200
    response = upload(crew_client, job, [("a-again.jpg", content)])
    assert response.status_code == 422 and "a-again.jpg is already on this job." in response.get_data(as_text=True)
    assert db.session.query(Photo).count() == 1


def test_a_file_name_is_never_trusted(db, job, crew_client):
    response = upload(crew_client, job, [("../../etc/<img src=x onerror=alert(1)>.jpg", image_bytes("JPEG"))])
    assert response.status_code == 200
    photo = db.session.scalars(db.select(Photo)).one()
    assert photo.original_filename == "<img src=x onerror=alert(1)>.jpg"
    assert "<img src=x" not in response.get_data(as_text=True)  # escaped when shown
    assert "etc" not in photo.storage_key and photo.storage_key.endswith(".jpg")


# --- removing -------------------------------------------------------------------------------------

def test_removing_a_photo_deletes_row_and_files(app, db, job, crew_client):
    upload(crew_client, job, [("gone.jpg", image_bytes("JPEG"))])
    photo = db.session.scalars(db.select(Photo)).one()
    fetch(crew_client, f"/photos/{photo.id}/thumb")
    original, thumb = get_storage().path(photo.storage_key), get_storage().path(thumbnail_key(photo.storage_key))
    assert original.exists() and thumb.exists()

    response = crew_client.htmx("POST", f"/crew/jobs/{job.id}/photos/{photo.id}/delete")

    assert response.status_code == 200 and response.get_data(as_text=True) == ""
    assert db.session.query(Photo).count() == 0
    assert not original.exists() and not thumb.exists()
    assert fetch(crew_client, f"/photos/{photo.id}")[0] == 404


def test_removing_a_photo_works_without_javascript(db, job, crew_client):
    upload(crew_client, job, [("first.jpg", image_bytes("JPEG")), ("second.jpg", image_bytes("JPEG", color="blue"))])
    first, second = db.session.scalars(db.select(Photo).order_by(Photo.id)).all()

    response = crew_client.post_form(f"/crew/jobs/{job.id}/photos/{first.id}/delete")

    assert response.status_code == 303
    page = crew_client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Photo removed." in page
    assert f"/photos/{first.id}/thumb" not in page and f"/photos/{second.id}/thumb" in page
    assert not get_storage().exists(first.storage_key) and get_storage().exists(second.storage_key)


def test_a_rolled_back_removal_keeps_the_file(app, db, job, crew):
    from portal.photos.services import add_photo, remove_photo

    photo = add_photo(job, FileStorage(io.BytesIO(image_bytes("JPEG")), "keep.jpg"), by=Actor.for_user(crew))
    db.session.commit()
    path = get_storage().path(photo.storage_key)
    remove_photo(photo, by=Actor.for_user(crew))
    db.session.rollback()
    db.session.commit()  # a later, unrelated commit must not delete it either
    assert path.exists() and db.session.get(Photo, photo.id) is not None


def test_photos_cannot_change_after_completion(app, db, crew, crew_client):
    job = factories.job(crew=[crew], items=[("Labor", "1", 8500)])
    upload(crew_client, job, [("before.jpg", image_bytes("JPEG"))])
    photo = db.session.scalars(db.select(Photo)).one()
    complete_job(job, by=Actor.for_user(crew))
    db.session.commit()

    response = upload(crew_client, job, [("after.jpg", image_bytes("JPEG", color="blue"))])
    assert response.status_code == 409 and "This job is completed" in response.get_data(as_text=True)
    response = crew_client.post_form(f"/crew/jobs/{job.id}/photos/{photo.id}/delete")
    assert response.status_code == 409 and "This job is completed" in response.get_data(as_text=True)

    assert db.session.scalars(db.select(Photo.id)).all() == [photo.id]
    assert get_storage().exists(photo.storage_key)
    page = crew_client.get(f"/crew/jobs/{job.id}").get_data(as_text=True)
    assert f"/photos/{photo.id}/thumb" in page and "Add photos" not in page and "Remove photo" not in page


# --- who may see ----------------------------------------------------------------------------------

def test_photos_are_served_only_to_people_who_can_see_the_job(app, db, job, crew_client, login, other_crew, office, partner):
    upload(crew_client, job, [("mine.jpg", image_bytes("JPEG"))])
    photo = db.session.scalars(db.select(Photo)).one()
    for url in (f"/photos/{photo.id}", f"/photos/{photo.id}/thumb"):
        assert fetch(login(other_crew), url)[0] == 404
        assert fetch(login(partner), url)[0] == 404
        assert fetch(login(office), url)[0] == 200
        status, headers, _ = fetch(app.test_client(), url)
        assert status == 302 and "/login" in headers["Location"]
    assert fetch(crew_client, f"/photos/{photo.id + 1000}")[0] == 404
    assert fetch(crew_client, f"/photos/{2**40}/thumb")[0] == 404


def test_another_crews_photo_cannot_be_removed_through_my_job(db, crew, other_crew, login):
    mine = factories.job(crew=[crew])
    theirs = factories.job(crew=[other_crew])
    upload(login(other_crew), theirs, [("theirs.jpg", image_bytes("JPEG"))])
    photo = db.session.scalars(db.select(Photo)).one()

    response = login(crew).post_form(f"/crew/jobs/{mine.id}/photos/{photo.id}/delete")

    assert response.status_code == 404
    assert db.session.query(Photo).count() == 1 and get_storage().exists(photo.storage_key)


# --- storage --------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", [
    "../../etc/passwd",
    "/etc/passwd",
    "ab/cd/../../../etc/passwd",
    "ab/cd/0123456789abcdef0123456789abcdef.jpg/../../x",
    "AB/CD/0123456789ABCDEF0123456789ABCDEF.jpg",
    "ab/cd/0123456789abcdef0123456789abcdef",
    "ab/cd/0123456789abcdef0123456789abcdef.jpg\x00.png",
    "",
    None,
])
def test_storage_refuses_keys_it_did_not_make(tmp_path, key):
    storage = LocalStorage(tmp_path)
    for use in (storage.path, storage.open, storage.exists, storage.delete):
        with pytest.raises(InvalidStorageKey):
            use(key)
    with pytest.raises(InvalidStorageKey):
        storage.put(key, b"x")
    with pytest.raises(InvalidStorageKey):
        storage.save(b"x", "../jpg")


def test_storage_refuses_a_symlink_out_of_its_root(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"secret")
    root = tmp_path / "root"
    (root / "ab").mkdir(parents=True)
    (root / "ab" / "cd").symlink_to(outside)
    storage = LocalStorage(root)
    with pytest.raises(InvalidStorageKey):
        storage.path("ab/cd/0123456789abcdef0123456789abcdef.jpg")


def test_storage_saves_under_server_made_keys_without_leftovers(tmp_path):
    storage = LocalStorage(tmp_path)
    first = storage.save(b"one", "jpg")
    second = storage.save(io.BytesIO(b"two"), ".heic")
    assert first != second and first.endswith(".jpg") and second.endswith(".heic")
    with storage.open(first) as stored:
        assert stored.read() == b"one"
    assert storage.path(second).read_bytes() == b"two"
    assert [path.name for path in tmp_path.rglob(".*.part")] == []
    storage.delete(first)
    storage.delete(first)  # already gone is fine
    assert not storage.exists(first) and storage.exists(second)
