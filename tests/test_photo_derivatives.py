"""Photo web copies and thumbnails: made by the worker after upload, upright, small and carrying no metadata."""
import io
import struct
from pathlib import Path

import pillow_heif
import pytest
from PIL import Image, ImageCms, ImageDraw
from rq.job import Job as RQJob
from sqlalchemy import delete
from werkzeug.datastructures import FileStorage

from bench.samples import TWELVE_MEGAPIXELS, jpeg_bytes, phone_exif
from portal.audit.services import Actor
from portal.jobs.models import Photo
from portal.photos import derivatives
from portal.photos.derivatives import ensure_derivatives, thumbnail_key, web_key
from portal.photos.services import add_photo, remove_photo
from portal.photos.storage import get_storage
from portal.photos.tasks import make_photo_derivatives
from portal.queue import get_queue
from tests import factories

SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
RED = (220, 20, 20)
MAKE_DERIVATIVES = "portal.photos.tasks.make_photo_derivatives"


def sideways_12mp_jpeg():
    """A 12 MP phone JPEG stored landscape, shown portrait (Orientation 6), with GPS, a comment and a profile.

    Stored top-left corner is red: shown upright, that corner is the top-right.
    """
    image = Image.new("RGB", TWELVE_MEGAPIXELS, (40, 90, 160))
    ImageDraw.Draw(image).rectangle((0, 0, 799, 599), fill=RED)
    return jpeg_bytes(image, exif=phone_exif(orientation=6).tobytes(), comment=b"shot at 12 Elm St",
                      icc_profile=SRGB_ICC)


def swapped_primaries_profile():
    """An RGB profile whose red and green primaries are swapped: in it, (255, 0, 0) means sRGB green.

    A stand-in for Display P3, which cannot be made here, that makes a missed conversion obvious.
    """
    data = bytearray(SRGB_ICC)
    tag_count = struct.unpack(">I", data[128:132])[0]
    tags = {bytes(data[at:at + 4]): at for at in range(132, 132 + 12 * tag_count, 12)}
    red, green = tags[b"rXYZ"], tags[b"gXYZ"]
    data[red + 4:red + 12], data[green + 4:green + 12] = data[green + 4:green + 12], data[red + 4:red + 12]
    return bytes(data).replace("sRGB".encode("utf-16-be"), "Swap".encode("utf-16-be"))  # not named sRGB


def heic_with_gps(size=(1800, 1000)):
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    buffer = io.BytesIO()
    # ultrafast: x265's default preset takes seconds for a photo this size
    pillow_heif.from_pillow(image).save(buffer, quality=30, exif=phone_exif().tobytes(),
                                        enc_params={"preset": "ultrafast"})
    return buffer.getvalue()


@pytest.fixture
def job(db, crew):
    return factories.job(crew=[crew])


@pytest.fixture
def add(db, job, crew):
    """add(bytes, name) → a committed Photo on the job, uploaded by the crew."""

    def upload(content, name="photo.jpg"):
        photo = add_photo(job, FileStorage(io.BytesIO(content), name), by=Actor.for_user(crew))
        db.session.commit()
        return photo

    return upload


def stored_image(key):
    data = get_storage().path(key).read_bytes()
    image = Image.open(io.BytesIO(data))
    image.load()
    return image, data


def assert_no_metadata(image, data):
    assert image.format == "JPEG"
    assert not image.getexif()
    assert not {"exif", "icc_profile", "comment", "xmp", "dpi"} & set(image.info)
    for marker in (b"Exif", b"PhoneCo", b"Elm St", b"ICC_PROFILE", b"http://ns.adobe.com/xap"):
        assert marker not in data


def run_queued_task(photo, queued_before):
    """Run the derivative task this upload enqueued, as the worker would."""
    queue = get_queue()
    queued = [RQJob.fetch(job_id, connection=queue.connection) for job_id in queue.job_ids if job_id not in queued_before]
    mine = [job for job in queued if job.func_name == MAKE_DERIVATIVES and tuple(job.args) == (photo.id,)]
    assert len(mine) == 1, "the upload did not enqueue its derivative task"
    mine[0].cancel()  # taken off the shared test queue so a worker in another test never runs it too
    return make_photo_derivatives(*mine[0].args)


def test_the_worker_makes_an_upright_clean_web_copy_and_thumbnail_after_upload(db, add):
    queued_before = set(get_queue().job_ids)
    photo = add(sideways_12mp_jpeg(), "IMG_0042.jpg")
    storage = get_storage()
    assert not storage.exists(web_key(photo.storage_key))  # not made in the request

    assert run_queued_task(photo, queued_before) == "made"

    web, web_data = stored_image(web_key(photo.storage_key))
    thumb, thumb_data = stored_image(thumbnail_key(photo.storage_key))
    assert web.size == (1200, 1600) and thumb.size == (240, 320)  # portrait: the orientation was applied
    for image, data in ((web, web_data), (thumb, thumb_data)):
        assert_no_metadata(image, data)
        width, _ = image.size
        red, green, blue = image.getpixel((width - 5, 5))  # stored top-left is shown top-right
        assert red > 180 and green < 80 and blue < 80
        assert image.getpixel((5, 5))[2] > 120  # and the shown top-left is the blue background
    assert web.info.get("progressive") and len(web_data) < 400_000


def test_a_heic_photo_gets_jpeg_copies_without_its_gps(db, add):
    photo = add(heic_with_gps(), "IMG_0001.HEIC")
    assert photo.content_type == "image/heic"

    web_copy, thumbnail = ensure_derivatives(photo)

    web, web_data = stored_image(web_copy)
    thumb, thumb_data = stored_image(thumbnail)
    assert web.size == (1600, 889) and thumb.size == (320, 178)
    assert_no_metadata(web, web_data)
    assert_no_metadata(thumb, thumb_data)


def test_colours_are_converted_to_srgb_before_the_profile_is_dropped(db, add):
    photo = add(jpeg_bytes(Image.new("RGB", (2000, 1500), (255, 0, 0)), icc_profile=swapped_primaries_profile()))

    web_copy, thumbnail = ensure_derivatives(photo)

    for key in (web_copy, thumbnail):
        image, data = stored_image(key)
        assert_no_metadata(image, data)
        red, green, blue = image.getpixel((10, 10))
        assert green > 230 and red < 30 and blue < 30  # the colour the profile meant, in sRGB


def test_a_small_photo_is_never_enlarged(db, add):
    buffer = io.BytesIO()
    Image.new("P", (120, 80), 3).save(buffer, "PNG")
    photo = add(buffer.getvalue(), "icon.png")

    web_copy, thumbnail = ensure_derivatives(photo)

    assert stored_image(web_copy)[0].size == (120, 80) and stored_image(thumbnail)[0].size == (120, 80)


def test_ensuring_twice_leaves_the_copies_alone_and_never_reopens_the_original(db, add):
    photo = add(jpeg_bytes(Image.new("RGB", (2000, 1500), "green")))
    storage = get_storage()
    keys = ensure_derivatives(photo)
    before = [storage.path(key).stat() for key in keys]
    storage.delete(photo.storage_key)  # a second decode would now fail

    assert ensure_derivatives(photo) == keys

    after = [storage.path(key).stat() for key in keys]
    assert [(s.st_ino, s.st_mtime_ns) for s in after] == [(s.st_ino, s.st_mtime_ns) for s in before]


def test_a_lost_thumbnail_is_remade_and_the_web_copy_kept(db, add):
    photo = add(jpeg_bytes(Image.new("RGB", (2000, 1500), "green")))
    storage = get_storage()
    web_copy, thumbnail = ensure_derivatives(photo)
    web_inode = storage.path(web_copy).stat().st_ino
    storage.delete(thumbnail)

    ensure_derivatives(photo)

    assert stored_image(thumbnail)[0].size == (320, 240)
    assert storage.path(web_copy).stat().st_ino == web_inode


def test_the_task_skips_a_photo_removed_before_the_worker_ran(app, db, add, crew):
    photo = add(jpeg_bytes(Image.new("RGB", (2000, 1500), "green")))
    photo_id, original_key = photo.id, photo.storage_key
    remove_photo(photo, by=Actor.for_user(crew))
    db.session.commit()

    assert make_photo_derivatives(photo_id) == "photo removed"

    assert db.session.get(Photo, photo_id) is None
    leftovers = [path.name for path in Path(app.config["UPLOAD_DIR"]).rglob(f"{Path(original_key).stem}*")]
    assert leftovers == []


def test_a_photo_removed_while_the_worker_decodes_it_leaves_no_copies_behind(app, db, add, monkeypatch):
    photo = add(jpeg_bytes(Image.new("RGB", (2000, 1500), "green")))
    photo_id, original_key = photo.id, photo.storage_key
    real_make = derivatives.make_derivatives

    def removed_meanwhile(stream, edges):
        made = real_make(stream, edges)
        with db.engine.begin() as connection:  # the office's removal, committed from another connection
            connection.execute(delete(Photo).where(Photo.id == photo_id))
        get_storage().delete(original_key)
        return made

    monkeypatch.setattr(derivatives, "make_derivatives", removed_meanwhile)

    assert make_photo_derivatives(photo_id) == "photo removed"

    assert not any(get_storage().exists(key) for key in derivatives.derivative_keys(original_key))


def test_removing_a_photo_deletes_its_web_copy_too(db, add, crew):
    photo = add(jpeg_bytes(Image.new("RGB", (2000, 1500), "green")))
    keys = ensure_derivatives(photo)
    remove_photo(photo, by=Actor.for_user(crew))
    db.session.commit()
    assert not any(get_storage().exists(key) for key in keys)


def test_the_web_copy_is_served_to_people_who_can_see_the_job(db, add, crew, other_crew, office, login):
    photo = add(sideways_12mp_jpeg())
    with login(crew).get(f"/photos/{photo.id}/web") as response:
        assert response.status_code == 200 and response.headers["Content-Type"] == "image/jpeg"
        shown = Image.open(io.BytesIO(response.get_data()))
        assert shown.size == (1200, 1600) and not shown.getexif()
    for user, status in ((office, 200), (other_crew, 404)):
        with login(user).get(f"/photos/{photo.id}/web") as response:
            assert response.status_code == status
