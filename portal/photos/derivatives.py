"""Versions made from a stored original: the ~320 px JPEG thumbnail the crew and office screens show."""
import io

from PIL import Image, ImageCms, ImageOps

from portal.photos.validation import PILLOW_FORMATS

THUMBNAIL_EDGE = 320
THUMBNAIL_QUALITY = 80
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def thumbnail_key(original_key):
    """ab/cd/<name>.heic → ab/cd/<name>.thumb.jpg: derived, so it never needs its own column."""
    return original_key.rsplit(".", 1)[0] + ".thumb.jpg"


def ensure_thumbnail(storage, original_key):
    """The thumbnail's key, making and caching the thumbnail on first use."""
    key = thumbnail_key(original_key)
    if not storage.exists(key):
        with storage.open(original_key) as original:
            storage.put(key, make_thumbnail(original))
    return key


def make_thumbnail(stream):
    """A small upright sRGB JPEG with no metadata at all (no EXIF, GPS, comments or profiles)."""
    with Image.open(stream, formats=PILLOW_FORMATS) as image:
        # JPEG only: decode at 1/2, 1/4 or 1/8 scale, still at least the thumbnail size,
        # which keeps a 12-megapixel phone photo from being fully decoded for a 320 px tile.
        image.draft("RGB", (THUMBNAIL_EDGE, THUMBNAIL_EDGE))
        upright = ImageOps.exif_transpose(image)
        icc_profile = image.info.get("icc_profile")
    upright = to_srgb(upright, icc_profile)
    upright.thumbnail((THUMBNAIL_EDGE, THUMBNAIL_EDGE), Image.Resampling.LANCZOS)
    clean = Image.new("RGB", upright.size, "white")
    clean.paste(upright, mask=upright.getchannel("A") if upright.mode == "RGBA" else None)
    output = io.BytesIO()
    clean.save(output, "JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
    return output.getvalue()


def to_srgb(image, icc_profile):
    """Convert to sRGB (keeping alpha), so that dropping the profile does not shift colours.

    Phones shoot in Display P3; a P3 photo shown without its profile looks washed out.
    """
    with_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    mode = "RGBA" if with_alpha else "RGB"
    if icc_profile and image.mode in ("RGB", "RGBA", "CMYK"):
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
            return ImageCms.profileToProfile(image, source, SRGB, outputMode=mode)
        except ImageCms.PyCMSError:
            pass  # an unreadable profile: a plain conversion is the best we can do
    return image.convert(mode)
