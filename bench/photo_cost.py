"""Photo cost: a 12 MP phone JPEG to its 1600 px web copy and 320 px thumbnail, ours beside libvips.

Ours is portal.photos.derivatives.make_derivatives, the code the worker runs: one decode
(JPEG draft decoding at 1/2 scale), EXIF rotation, Lanczos, metadata stripped, progressive
JPEG q80 with optimised Huffman tables. libvips is `pyvips.Image.thumbnail`, its fastest path
(shrink-on-load), once per size, saved without metadata. It is measured twice: with the same
JPEG encoder settings as ours (the like-for-like figure) and with libvips' default encoder
settings (baseline JPEG, the cheapest it can do). The target is ours ≤ 1.2× libvips' time.

Time is wall-clock per photo over interleaved rounds, after one warm-up each. Memory is the
growth of the process's peak RSS, measured for each contender in a fresh process, because
Pillow's and libvips' pixel buffers live outside Python's allocator: tracemalloc, shown for
ours, sees only the Python objects around them.
"""
import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

from bench.report import Result
from bench.samples import jpeg_bytes, phone_exif, synthetic_scene

TITLE = "Photo cost: 12 MP JPEG → 1600 px web copy + 320 px thumbnail"
ITERATIONS = 10
TARGET_RATIO = 1.2
WEB_EDGE, THUMBNAIL_EDGE, QUALITY = 1600, 320, 80
REPO = Path(__file__).resolve().parent.parent


def ours(source, out_dir, prefix="ours"):
    """What the worker does for one upload (minus the storage's fsync)."""
    from portal.photos.derivatives import make_derivatives

    with open(source, "rb") as original:
        web, thumbnail = make_derivatives(original, [WEB_EDGE, THUMBNAIL_EDGE])
    (out_dir / f"{prefix}.web.jpg").write_bytes(web)
    (out_dir / f"{prefix}.thumb.jpg").write_bytes(thumbnail)


def ours_without_draft(source, out_dir):
    """Ours with JPEG draft decoding switched off: what the full 12 MP decode would cost (for reference)."""
    from unittest import mock

    from PIL.JpegImagePlugin import JpegImageFile

    with mock.patch.object(JpegImageFile, "draft", lambda image, mode, size: None):
        ours(source, out_dir, prefix="full")


def pyvips_like_ours(source, out_dir):
    """libvips thumbnail per size, with our encoder settings (progressive, optimised tables)."""
    import pyvips

    for edge in (WEB_EDGE, THUMBNAIL_EDGE):
        pyvips.Image.thumbnail(str(source), edge).jpegsave(
            str(out_dir / f"vips.{edge}.jpg"), Q=QUALITY, keep="none", optimize_coding=True, interlace=True)


def pyvips_defaults(source, out_dir):
    """libvips thumbnail per size, saved with its default (baseline) encoder settings."""
    import pyvips

    for edge in (WEB_EDGE, THUMBNAIL_EDGE):
        pyvips.Image.thumbnail(str(source), edge).jpegsave(str(out_dir / f"vips-plain.{edge}.jpg"), Q=QUALITY, keep="none")


@dataclass
class Contender:
    key: str
    label: str
    work: object


OURS = Contender("ours", "Closeout (Pillow, draft decoding, one decode)", ours)
FULL_DECODE = Contender("ours_full_decode", "Closeout without draft decoding (reference)", ours_without_draft)
PYVIPS_LIKE_OURS = Contender("pyvips", "pyvips `thumbnail`, same JPEG settings", pyvips_like_ours)
PYVIPS_DEFAULTS = Contender("pyvips_defaults", "pyvips `thumbnail`, default JPEG settings", pyvips_defaults)
CONTENDERS = {contender.key: contender for contender in (OURS, FULL_DECODE, PYVIPS_LIKE_OURS, PYVIPS_DEFAULTS)}


def pyvips_problem():
    """Why pyvips cannot be measured here, or None when it can."""
    try:
        import pyvips
    except (ImportError, OSError) as error:
        return f"pyvips is not available ({error}); install it with `pip install pyvips pyvips-binary`"
    # Cached operations would let libvips skip work on the second and later runs of the same file.
    pyvips.cache_set_max(0)
    return None


def write_sample(directory):
    """A 12 MP phone JPEG (quality 90, EXIF with GPS, shot portrait so it is stored rotated)."""
    path = directory / "phone-12mp.jpg"
    path.write_bytes(jpeg_bytes(synthetic_scene(seed=12), exif=phone_exif(orientation=6).tobytes()))
    return path


def time_contenders(contenders, source, out_dir, iterations):
    """Wall and CPU milliseconds per photo, contenders interleaved so drift hits each alike."""
    walls = {c.key: [] for c in contenders}
    cpus = {c.key: [] for c in contenders}
    for contender in contenders:
        contender.work(source, out_dir)  # warm-up: imports, page cache, libvips' thread pool
    for _ in range(iterations):
        for contender in contenders:
            wall, cpu = time.perf_counter(), time.process_time()
            contender.work(source, out_dir)
            walls[contender.key].append((time.perf_counter() - wall) * 1000)
            cpus[contender.key].append((time.process_time() - cpu) * 1000)
    return walls, cpus


def peak_memory(contender, source):
    """Peak RSS growth (and, for ours, tracemalloc's peak) of one photo, in a fresh process."""
    output = subprocess.run(
        [sys.executable, "-m", "bench.photo_cost", "--peak-memory", contender.key, str(source)],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def measure_in_this_process(key, source):
    """The child side of peak_memory: import everything first, then do the work once."""
    contender = CONTENDERS[key]
    if key.startswith("pyvips"):
        pyvips_problem()
    import portal.photos.derivatives  # noqa: F401  (imports are not the photo's cost)

    with tempfile.TemporaryDirectory() as scratch:
        before = peak_rss_bytes()
        tracemalloc.start()
        contender.work(Path(source), Path(scratch))
        _, heap_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        after = peak_rss_bytes()
    print(json.dumps({"rss_growth_mib": (after - before) / 2**20, "heap_peak_mib": heap_peak / 2**20}))


def peak_rss_bytes():
    """This process's peak resident memory.

    VmHWM where there is one: Linux carries ru_maxrss over from the parent across fork and exec,
    so a child started by a benchmark that just made a 12 MP image would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass  # not Linux: ru_maxrss is in bytes on macOS
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def p95(values):
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def run(iterations=ITERATIONS):
    """Time and memory of ours and of pyvips on the same 12 MP photo."""
    problem = pyvips_problem()
    contenders = [OURS, FULL_DECODE] + ([] if problem else [PYVIPS_LIKE_OURS, PYVIPS_DEFAULTS])
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        source = write_sample(scratch)
        walls, cpus = time_contenders(contenders, source, scratch, iterations)
        memory = {c.key: peak_memory(c, source) for c in contenders}
        sample_mb = source.stat().st_size / 1e6
        outputs = {c.key: output_sizes(c, scratch) for c in contenders}

    figures, rows = {}, []
    for contender in contenders:
        key = contender.key
        mean, high, cpu = statistics.mean(walls[key]), p95(walls[key]), statistics.mean(cpus[key])
        figures[f"{key} mean ms"] = round(mean, 1)
        figures[f"{key} p95 ms"] = round(high, 1)
        figures[f"{key} cpu ms"] = round(cpu, 1)
        figures[f"{key} peak RSS growth MiB"] = round(memory[key]["rss_growth_mib"], 1)
        heap = "n/a" if key.startswith("pyvips") else f"{memory[key]['heap_peak_mib']:.1f}"
        rows.append(f"| {contender.label} | {mean:.1f} | {high:.1f} | {cpu:.1f} | "
                    f"{memory[key]['rss_growth_mib']:.1f} | {heap} | {outputs[key]} |")
    verdict = ""
    if not problem:
        ours_mean = statistics.mean(walls["ours"])
        like, plain = statistics.mean(walls["pyvips"]), statistics.mean(walls["pyvips_defaults"])
        figures["ratio ours / pyvips same settings"] = round(ours_mean / like, 2)
        figures["ratio ours / pyvips defaults"] = round(ours_mean / plain, 2)
        strictest = ours_mean / min(like, plain)
        figures["meets target (≤ 1.2× the faster pyvips)"] = strictest <= TARGET_RATIO
        verdict = (f"**Ratio (mean time):** ours / pyvips with the same JPEG settings = **{ours_mean / like:.2f}×**; "
                   f"ours / pyvips with its defaults = **{ours_mean / plain:.2f}×**. Target ≤ {TARGET_RATIO}× "
                   f"of the faster: **{'met' if strictest <= TARGET_RATIO else 'NOT met'}** ({strictest:.2f}×).")
    else:
        verdict = f"**pyvips not measured:** {problem}."

    markdown = "\n".join([
        f"Input: one synthetic 4000×3000 phone JPEG ({sample_mb:.1f} MB, quality 90, EXIF with GPS, "
        "Orientation 6); output: a 1600 px web copy and a 320 px thumbnail, JPEG q80, no metadata. "
        f"{iterations} interleaved rounds after a warm-up; memory from one photo in a fresh process.",
        "",
        "| | mean ms | p95 ms | CPU ms | peak RSS growth MiB | tracemalloc peak MiB | output bytes (web + thumb) |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        verdict,
        "",
        "CPU ms above wall ms means libvips used more than one core. tracemalloc sees only Python's "
        "allocator, not Pillow's pixel buffers, so compare the RSS column.",
    ])
    return Result(TITLE, figures, markdown)


def output_sizes(contender, scratch):
    names = {"ours": ("ours.web.jpg", "ours.thumb.jpg"), "ours_full_decode": ("full.web.jpg", "full.thumb.jpg"),
             "pyvips": ("vips.1600.jpg", "vips.320.jpg"),
             "pyvips_defaults": ("vips-plain.1600.jpg", "vips-plain.320.jpg")}[contender.key]
    return " + ".join(f"{(scratch / name).stat().st_size:,}" for name in names)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="internal: one contender's peak memory, in this process")
    parser.add_argument("--peak-memory", nargs=2, metavar=("CONTENDER", "PHOTO"), required=True)
    measure_in_this_process(*parser.parse_args().peak_memory)
