"""The proof-of-work PDF of a completed job, and the SHA-256 fingerprint printed on it.

The fingerprint is of the *packet* (proof_packet: the job's facts, items, notes and the
hashes of its original photos), not of the PDF bytes: anyone holding the job's records can
recompute it, and any change to what the customer was shown gives a different one.

Rendered with xhtml2pdf from an autoescaped Jinja template. Nothing in the document is
fetched: the only resources are the `photo:<id>` and `logo:` URIs we write, which the
link_callback resolves to this job's web copies (paths the storage confines) and the logo.
xhtml2pdf's resource policy backs that up: no network, and no local file but those
(issue 4, section 2).
"""
import hashlib
import io
import json
from datetime import timezone
from pathlib import Path

from flask import current_app, render_template
from xhtml2pdf import pisa
from xhtml2pdf.config.resources import ResourceAccessPolicy

from portal.timeutil import business_zone
from portal.money import format_money
from portal.photos.derivatives import WEB_EDGE, ensure_derivatives, fitted, web_key
from portal.photos.storage import get_storage

PACKET_FORMAT = "closeout-proof-v1"  # bump when the packet's fields change, so old fingerprints stay explainable
DEFAULT_LOGO = Path(__file__).resolve().parent.parent / "static" / "logo.png"
PHOTO_BOX = (330, 330)  # CSS pixels (96 to the inch): two columns across a Letter page's 7.3 in of text width
LOGO_URI = "logo:"
PHOTO_URI_PREFIX = "photo:"
# What every other URI resolves to. Not "": xhtml2pdf treats an empty answer from a
# link_callback as "no opinion" and goes on to read the original URI.
NOTHING = "data:,"


class ProofRenderError(RuntimeError):
    """xhtml2pdf could not render the proof PDF."""


def fingerprint(packet):
    """SHA-256 hex of the packet's canonical JSON."""
    canonical = json.dumps(packet, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def proof_packet(trigger):
    """The canonical content of the trigger's proof: what the fingerprint covers."""
    job = trigger.job
    totals = job.totals
    return {
        "format": PACKET_FORMAT,
        "business_name": current_app.config["BUSINESS_NAME"],
        "job_number": job.number,
        "client_name": job.client.name,
        "site_address": job.address,
        "completed_at": iso_utc(job.completed_at),
        "completed_by": job.completed_by.name if job.completed_by else None,
        "crew": [member.name for member in job.crew],
        "scope": job.scope or "",
        "customer_notes": job.customer_notes or "",
        "notes": [
            {"author": note.author.name if note.author else None, "at": iso_utc(note.created_at), "body": note.body}
            for note in job.notes
        ],
        "line_items": [
            {
                "description": item.description,
                "quantity": quantity_text(item.quantity),
                "unit": item.unit,
                "unit_amount": item.unit_amount,
                "amount": item.amount,
                "tax_amount": item.tax_amount,
            }
            for item in job.line_items
        ],
        "subtotal": totals.subtotal,
        "tax": totals.tax,
        "total": totals.total,
        "currency": job.currency,
        "photos": [{"id": photo.id, "sha256": photo.sha256, "taken_at": iso_utc(photo.taken_at)} for photo in job.photos],
    }


def store_proof(trigger):
    """Render and store the trigger's proof PDF; returns (storage key, packet fingerprint)."""
    packet = proof_packet(trigger)
    pdf = render_proof(trigger, packet)
    return get_storage().save(pdf, ".pdf"), fingerprint(packet)


def render_proof(trigger, packet=None):
    """The proof-of-work PDF of the trigger's job, as bytes."""
    packet = packet or proof_packet(trigger)
    job = trigger.job
    for photo in job.photos:
        # Already made by the worker after upload, so usually two stat calls; a missing web
        # copy would otherwise be left out of the PDF with nothing but a log line.
        ensure_derivatives(photo)
    html = render_template("billing/proof.html", **proof_context(job, packet))
    return html_to_pdf(html, ProofResources(job))


def html_to_pdf(html, resources):
    """xhtml2pdf with our link_callback and a resource policy that allows nothing else."""
    output = io.BytesIO()
    status = pisa.CreatePDF(html, dest=output, encoding="utf-8", link_callback=resources,
                            resource_policy=resources.policy())
    if status.err:
        raise ProofRenderError(f"xhtml2pdf reported {status.err} error(s) rendering a proof of work")
    return output.getvalue()


class ProofResources:
    """The link_callback: our own `photo:<id>` and `logo:` URIs to confined local paths, anything else to nothing."""

    def __init__(self, job):
        storage = get_storage()
        # storage.path() refuses any key it did not make, so these stay under the storage root.
        self.paths = {f"{PHOTO_URI_PREFIX}{photo.id}": storage.path(web_key(photo.storage_key)) for photo in job.photos}
        self.paths[LOGO_URI] = logo_path()

    def __call__(self, uri, rel=None):
        path = self.paths.get(uri) if isinstance(uri, str) else None
        return str(path) if path is not None else NOTHING

    def policy(self):
        """No network, and local reads of exactly the files we resolve to, should a URI ever get past us."""
        return ResourceAccessPolicy.server(
            base_dir=None,
            extra_roots=tuple(self.paths.values()),
            allow_remote=False,
            allowed_hosts=frozenset(),
            # A job's photo count is ours to bound, not the renderer's; the per-file and pixel limits stay.
            max_resources=None,
            max_total_bytes=None,
            max_render_seconds=None,
        )


def logo_path():
    """The business logo: BUSINESS_LOGO_PATH when configured, else the bundled one."""
    configured = current_app.config.get("BUSINESS_LOGO_PATH")
    path = Path(configured).resolve() if configured else DEFAULT_LOGO
    if not path.is_file():
        raise FileNotFoundError(f"BUSINESS_LOGO_PATH {configured!r} is not a file")
    return path


def proof_context(job, packet):
    """What the template shows: the packet's values formatted for people, plus the fingerprint."""
    currency = packet["currency"]
    return dict(
        packet=packet,
        fingerprint=fingerprint(packet),
        completed_at=business_time(job.completed_at),
        notes=[dict(note, at=business_time(source.created_at)) for note, source in zip(packet["notes"], job.notes)],
        line_items=[
            dict(line, unit_price=format_money(line["unit_amount"], currency), amount_text=format_money(line["amount"], currency),
                 tax_text=format_money(line["tax_amount"], currency))
            for line in packet["line_items"]
        ],
        subtotal=format_money(packet["subtotal"], currency),
        tax=format_money(packet["tax"], currency),
        total=format_money(packet["total"], currency),
        photo_rows=pairs([photo_cell(number, photo) for number, photo in enumerate(job.photos, start=1)]),
        logo_uri=LOGO_URI,
    )


def photo_cell(number, photo):
    """One photo of the grid: its URI, its size on the page and its capture time."""
    width, height = fitted((photo.width, photo.height), WEB_EDGE)  # the web copy's size: upright, like the row's
    scale = min(PHOTO_BOX[0] / width, PHOTO_BOX[1] / height)
    return dict(number=number, uri=f"{PHOTO_URI_PREFIX}{photo.id}", width=round(width * scale),
                height=round(height * scale), taken=business_time(photo.taken_at))


def pairs(cells):
    """Cells two to a row, the last row padded."""
    rows = [cells[index:index + 2] for index in range(0, len(cells), 2)]
    if rows and len(rows[-1]) == 1:
        rows[-1].append(None)
    return rows


def business_time(moment):
    """`Nov 2, 2026 2:30 PM CST` in BUSINESS_TIMEZONE; None when unknown."""
    if moment is None:
        return None
    local = moment.astimezone(business_zone())
    return f"{local:%b} {local.day}, {local.year} {local.hour % 12 or 12}:{local:%M %p %Z}"


def iso_utc(moment):
    """An aware time as ISO 8601 in UTC (the packet never depends on the business timezone); None stays None."""
    return moment.astimezone(timezone.utc).isoformat() if moment is not None else None


def quantity_text(quantity):
    """2.500 → '2.5', 3.000 → '3'."""
    return format(quantity.normalize(), "f")
