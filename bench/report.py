"""What a benchmark hands back, the machine it ran on, and docs/benchmarks.md assembled from both."""
import os
import platform
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SECTION = re.compile(r"<!-- bench:(?P<name>[\w.]+) -->\n.*?<!-- /bench:(?P=name) -->\n", re.S)


@dataclass
class Result:
    """One benchmark's outcome: figures to print (name → value) and its markdown section body."""

    title: str
    figures: dict = field(default_factory=dict)
    markdown: str = ""


def machine_facts():
    """CPU, cores, memory, OS and the versions of what the benchmarks exercise."""
    facts = {
        "Date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "CPU": cpu_model(),
        "Cores": cores(),
        "RAM": memory_total(),
        "OS": f"{platform.system()} {platform.release()} {platform.machine()}",
        "Python": platform.python_version(),
        "Pillow": pillow_version(),
        "pillow-heif": package_version("pillow-heif"),
        "libvips": libvips_version(),
        "xhtml2pdf": package_version("xhtml2pdf"),
    }
    return facts


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass  # not Linux: the platform's own answer is all there is
    return platform.processor() or "unknown"


def cores():
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{usable} usable of {os.cpu_count()}"


def memory_total():
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return "unknown"
    return f"{pages * page_size / 2**30:.1f} GiB"


def package_version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def pillow_version():
    from PIL import features

    return f"{package_version('Pillow')} (libjpeg-turbo {features.version('libjpeg_turbo') or 'absent'})"


def libvips_version():
    try:
        import pyvips
    except (ImportError, OSError):
        return "not installed (pip install pyvips pyvips-binary)"
    return f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)} (pyvips {pyvips.__version__})"


def section(name, result, measured):
    """A result as a marked block, so a later partial run can replace just its own."""
    return (f"<!-- bench:{name} -->\n## {result.title}\n\n_Measured {measured}._\n\n"
            f"{result.markdown.strip()}\n<!-- /bench:{name} -->\n")


def write_document(results, path=DOCUMENT):
    """Rewrite the document: fresh machine facts, these results' sections, other sections kept as they were."""
    facts = machine_facts()
    kept = {}
    if path.exists():
        kept = {match["name"]: match.group(0) for match in SECTION.finditer(path.read_text())}
    kept.update({name: section(name, result, facts["Date"]) for name, result in results.items()})
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m bench`): rerun it rather than editing this file.",
        "Figures are from one run on the machine below; compare ratios, not absolute times, across machines.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {key} | {value} |" for key, value in facts.items()],
        "",
    ]
    body = "\n".join(lines) + "\n" + "\n".join(kept[name] for name in sorted(kept))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    return path
