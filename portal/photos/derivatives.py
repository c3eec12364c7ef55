"""Versions made from a stored original: the 1600 px web copy (proof PDFs) and the 320 px thumbnail (screens, email).

Both are upright sRGB JPEGs carrying no metadata at all: no EXIF (so no GPS), no comment,
no ICC profile, no XMP. Their keys are derived from the original's, so they need no columns.
"""
import io
from dataclasses import dataclass

from PIL import Image, ImageCms, ImageOps

from portal.photos.storage import get_storage
from portal.photos.validation import PILLOW_FORMATS

WEB_EDGE = 1600
THUMBNAIL_EDGE = 320
JPEG_QUALITY = 80
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@dataclass(frozen=True)
class Derivative:
    """One derived version: its key tag and the long edge it is shrunk to."""

    tag: str
    edge: int

    def key(self, original_key):
        """ab/cd/<name>.heic → ab/cd/<name>.<tag>.jpg."""
        return original_key.rsplit(".", 1)[0] + f".{self.tag}.jpg"


WEB = Derivative("web", WEB_EDGE)
THUMBNAIL = Derivative("thumb", THUMBNAIL_EDGE)
DERIVATIVES = (WEB, THUMBNAIL)  # largest first: each is shrunk from the one before


def web_key(original_key):
    """ab/cd/<name>.heic → ab/cd/<name>.web.jpg."""
    return WEB.key(original_key)


def thumbnail_key(original_key):
    """ab/cd/<name>.heic → ab/cd/<name>.thumb.jpg."""
    return THUMBNAIL.key(original_key)


def derivative_keys(original_key):
    """The keys of every version derived from an original (to delete with it)."""
    return [derivative.key(original_key) for derivative in DERIVATIVES]


def ensure_derivatives(photo, storage=None):
    """Make whichever of the photo's web copy and thumbnail is missing; returns (web key, thumbnail key)."""
    return ensure_for_key(storage or get_storage(), photo.storage_key)


def ensure_thumbnail(storage, original_key):
    """The thumbnail's key, making the missing versions on first use (the lazy path before the worker ran)."""
    ensure_for_key(storage, original_key)
    return thumbnail_key(original_key)


def ensure_for_key(storage, original_key):
    """Make the missing versions of one original from a single decode; returns (web key, thumbnail key).

    Safe to run twice at once: storage.put writes a temporary file and renames it, so
    a reader sees a whole JPEG or none, and the second writer replaces it with the same image.
    """
    missing = [derivative for derivative in DERIVATIVES if not storage.exists(derivative.key(original_key))]
    if missing:
        with storage.open(original_key) as original:
            made = make_derivatives(original, [derivative.edge for derivative in missing])
        for derivative, data in zip(missing, made):
            storage.put(derivative.key(original_key), data)
    return web_key(original_key), thumbnail_key(original_key)


def make_derivatives(stream, edges):
    """Upright sRGB JPEGs without metadata, one per long edge in `edges` (largest first), from one decode."""
    with Image.open(stream, formats=PILLOW_FORMATS) as image:
        # JPEG only (a no-op for the others): libjpeg decodes at 1/2, 1/4 or 1/8 scale, still at
        # least the largest size wanted, so a 12 MP photo costs about what libvips' shrink-on-load
        # costs instead of a full decode (issue 4, section 1).
        image.draft("RGB", fitted(image.size, edges[0]))
        icc_profile = image.info.get("icc_profile")
        # Shrunk first, then turned upright and colour-managed: both cost per pixel, and the
        # long edge is the same either way round.
        current = shrink(resizable(image), edges[0])
        ImageOps.exif_transpose(current, in_place=True)
        current = flatten(to_srgb(current, icc_profile))
        results = [clean_jpeg(current)]
        for edge in edges[1:]:
            current = shrink(current, edge)
            results.append(clean_jpeg(current))
    return results


def fitted(size, edge):
    """The size that fits within edge × edge, keeping the aspect ratio; never larger than `size`."""
    width, height = size
    longest = max(width, height)
    if longest <= edge:
        return width, height
    scale = edge / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def shrink(image, edge):
    """The image shrunk to fit within edge × edge (the same image when it already fits)."""
    size = fitted(image.size, edge)
    if size == image.size:
        return image
    # reducing_gap: a cheap box reduction first when shrinking by 2× or more, then Lanczos;
    # visually the same as Lanczos from the full size (Pillow's thumbnail() default).
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)


def resizable(image):
    """The image in a mode Pillow resamples smoothly (palette images would be resized by nearest pixel)."""
    if image.mode in ("RGB", "RGBA", "CMYK", "L"):
        return image
    with_alpha = image.mode in ("LA", "PA", "La", "RGBa") or "transparency" in image.info
    return image.convert("RGBA" if with_alpha else "RGB")


def flatten(image):
    """RGB with any transparency laid on white, the way a page shows it."""
    if image.mode != "RGBA":
        return image.convert("RGB") if image.mode != "RGB" else image
    clean = Image.new("RGB", image.size, "white")
    clean.paste(image, mask=image.getchannel("A"))
    return clean


def clean_jpeg(image):
    """The image as a JPEG with nothing but pixels: Pillow would carry a comment over from `info`."""
    image.info = {}
    output = io.BytesIO()
    image.save(output, "JPEG", quality=JPEG_QUALITY, optimize=True, progressive=True)
    return output.getvalue()


def to_srgb(image, icc_profile):
    """Convert to sRGB (keeping alpha), so that dropping the profile does not shift colours.

    Phones shoot in Display P3; a P3 photo shown without its profile looks washed out.
    """
    mode = "RGBA" if image.mode == "RGBA" else "RGB"  # resizable() left RGB, RGBA, CMYK or L
    if icc_profile and image.mode in ("RGB", "RGBA", "CMYK"):
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
            if image.mode == "CMYK" or not is_srgb(source):
                return ImageCms.profileToProfile(image, source, SRGB, outputMode=mode)
        except ImageCms.PyCMSError:
            pass  # an unreadable profile: a plain conversion is the best we can do
    return image.convert(mode)


def is_srgb(profile):
    """Whether a profile names itself sRGB, so converting would only cost time.

    The transform costs as much as the whole decode of a web copy (~60 ms at 1600 px),
    and most Android photos carry a plain sRGB profile.
    """
    return "srgb" in ImageCms.getProfileDescription(profile).lower()

