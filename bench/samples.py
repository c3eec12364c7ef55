"""Synthetic photos that compress and decode like a phone's: smooth scenes, hard edges, sensor grain."""
import io
import random

from PIL import ExifTags, Image, ImageChops, ImageDraw

TWELVE_MEGAPIXELS = (4000, 3000)


def synthetic_scene(size=TWELVE_MEGAPIXELS, seed=0):
    """An RGB image of soft colour fields, shapes and grain (not flat colour, which JPEG makes too cheap)."""
    rng = random.Random(seed)
    width, height = size

    def random_pixels(w, h):
        return Image.frombytes("RGB", (w, h), rng.randbytes(w * h * 3))

    # Smooth light and colour from a tiny random image blown up, mid-scale texture from a larger one.
    image = Image.blend(random_pixels(8, 6).resize(size, Image.Resampling.BICUBIC),
                        random_pixels(max(1, width // 16), max(1, height // 16)).resize(size, Image.Resampling.BICUBIC),
                        0.3)
    draw = ImageDraw.Draw(image)
    for _ in range(60):  # objects and their edges, where JPEG spends its bits
        x, y, radius = rng.randrange(width), rng.randrange(height), rng.randrange(20, max(21, width // 6))
        colour = tuple(rng.randrange(256) for _ in range(3))
        draw.ellipse((x - radius, y - radius, x + radius, y + radius // 2), fill=colour)
        draw.line((x, y, x + rng.randrange(-radius, radius), y + rng.randrange(-radius, radius)),
                  fill=colour[::-1], width=rng.randrange(2, 12))
    # Sensor grain, tiled from one noise patch: a full-size noise field costs seconds to make.
    tile = Image.effect_noise((min(width, 1000), min(height, 750)), 10)
    grain = Image.new("L", size)
    for left in range(0, width, tile.width):
        for top in range(0, height, tile.height):
            grain.paste(tile, (left, top))
    return ImageChops.add(image, Image.merge("RGB", (grain, grain, grain)), 1.0, -128)


def phone_exif(orientation=1, taken="2026:11:02 14:30:00", offset="-05:00"):
    """EXIF as a phone writes it: camera, capture time, GPS position and orientation."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "PhoneCo"
    exif[ExifTags.Base.Model] = "Pocket 12"
    exif[ExifTags.Base.Orientation] = orientation
    details = exif.get_ifd(ExifTags.IFD.Exif)
    details[ExifTags.Base.DateTimeOriginal] = taken
    details[ExifTags.Base.OffsetTimeOriginal] = offset
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (40.0, 26.0, 46.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "W"
    gps[ExifTags.GPS.GPSLongitude] = (79.0, 58.0, 56.0)
    return exif


def jpeg_bytes(image, quality=90, **save_options):
    """The image as a JPEG file's bytes (phones save at about quality 90)."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, **save_options)
    return buffer.getvalue()
