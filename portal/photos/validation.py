"""Deciding whether an upload is a photo we keep: size, real type, pixel count, integrity.

Order matters: the size cap is applied while reading, the type is decided from
magic bytes before Pillow sees the file (so EPS, PSD, SVG, GIF or PDF never reach
Pillow's other plugins), the pixel count is checked from the header before any
decoding, and only then is the whole image decoded to catch truncation.
"""
import hashlib
import io
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import PurePath

import pillow_heif
from flask import current_app
from PIL import ExifTags, Image

from portal.errors import Unprocessable
from portal.timeutil import business_zone

pillow_heif.register_heif_opener()

READ_CHUNK = 64 * 1024
HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}


@dataclass(frozen=True)
class PhotoFormat:
    pillow_format: str
    content_type: str
    suffix: str


JPEG = PhotoFormat("JPEG", "image/jpeg", "jpg")
PNG = PhotoFormat("PNG", "image/png", "png")
WEBP = PhotoFormat("WEBP", "image/webp", "webp")
HEIC = PhotoFormat("HEIF", "image/heic", "heic")
HEIF = PhotoFormat("HEIF", "image/heif", "heif")
PILLOW_FORMATS = ["JPEG", "PNG", "WEBP", "HEIF"]  # the only decoders a stored photo is ever opened with
DECODE_ERRORS = (OSError, SyntaxError, EOFError, ValueError)  # what Pillow and pillow-heif raise on bad data


@dataclass(frozen=True)
class CheckedPhoto:
    """An upload that passed every check, with what we record about it."""

    data: bytes
    filename: str
    format: PhotoFormat
    width: int
    height: int
    sha256: str
    taken_at: datetime | None

    @property
    def size(self):
        return len(self.data)


def display_name(filename):
    """The user's file name, reduced to something safe to repeat back in a message."""
    name = PurePath((filename or "").replace("\\", "/")).name.strip()
    name = re.sub(r"[\x00-\x1f\x7f]", "", name)
    return name[:120] or "That file"


def describe_bytes(count):
    """20971520 → '20 MB', the way people talk about file sizes."""
    if count >= 1024 * 1024:
        return f"{round(count / (1024 * 1024), 1):g} MB"
    return f"{max(1, round(count / 1024))} KB"


def read_capped(stream, limit, name):
    """Read the whole upload, stopping as soon as it passes the cap."""
    buffer = io.BytesIO()
    while chunk := stream.read(READ_CHUNK):
        buffer.write(chunk)
        if buffer.tell() > limit:
            raise Unprocessable(f"{name} is larger than {describe_bytes(limit)}.", {"photos": "too large"})
    return buffer.getvalue()


def sniff_format(head):
    """The photo format named by the file's first bytes, or None for anything else."""
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS:
        return HEIC if head[8:12].startswith(b"he") else HEIF
    return None


def check_photo(stream, filename):
    """Read and check one upload; raise Unprocessable with a message naming the file."""
    name = display_name(filename)
    data = read_capped(stream, current_app.config["PHOTO_MAX_BYTES"], name)
    photo_format = sniff_format(data[:32])
    if photo_format is None:
        raise Unprocessable(f"{name} is not a photo (JPEG, PNG, WebP or HEIC).", {"photos": "not a photo"})
    damaged = Unprocessable(f"{name} is damaged or incomplete.", {"photos": "damaged"})
    too_big = Unprocessable(f"{name} has too many pixels.", {"photos": "too many pixels"})
    try:
        with Image.open(io.BytesIO(data), formats=[photo_format.pillow_format]) as image:
            width, height = image.size
            if width * height > current_app.config["PHOTO_MAX_PIXELS"]:
                raise too_big
            image.load()
            taken_at = taken_at_from_exif(image.getexif())
            upright_width, upright_height = upright_size(image, width, height)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # The warning only arrives as an exception when warnings are errors (the
        # tests); otherwise the PHOTO_MAX_PIXELS check above has already refused it.
        raise too_big from None
    except DECODE_ERRORS:
        raise damaged from None
    return CheckedPhoto(
        data=data,
        filename=name,
        format=photo_format,
        width=upright_width,
        height=upright_height,
        sha256=hashlib.sha256(data).hexdigest(),
        taken_at=taken_at,
    )


def upright_size(image, width, height):
    """Width and height as the photo is shown, after its EXIF orientation turns it."""
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    if orientation in (5, 6, 7, 8):  # the four orientations that swap the axes
        return height, width
    return width, height


def taken_at_from_exif(exif):
    """EXIF DateTimeOriginal as aware UTC; without an offset tag, the business timezone is assumed."""
    details = exif.get_ifd(ExifTags.IFD.Exif)
    stamp = exif_text(details.get(ExifTags.Base.DateTimeOriginal))
    if not stamp:
        return None
    try:
        local = datetime.strptime(stamp, "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None  # cameras write "0000:00:00 00:00:00" and worse; no time beats a wrong one
    offset = exif_text(details.get(ExifTags.Base.OffsetTimeOriginal))
    if offset and re.fullmatch(r"[+-]\d{2}:\d{2}", offset):
        taken = datetime.strptime(f"{stamp} {offset.replace(':', '')}", "%Y:%m:%d %H:%M:%S %z")
    else:
        taken = local.replace(tzinfo=business_zone())
    return taken.astimezone(timezone.utc)


def exif_text(value):
    if isinstance(value, bytes):
        value = value.decode("ascii", "ignore")
    return value.strip("\x00 ") if isinstance(value, str) else None

