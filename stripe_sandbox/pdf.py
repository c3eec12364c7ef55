"""A small, valid one-page PDF of an invoice, written by hand so the sandbox needs no PDF library."""

from datetime import datetime, timezone

from stripe_sandbox.money import format_amount

PAGE_WIDTH, PAGE_HEIGHT = 612, 792  # US Letter, in points
LEFT, TOP, LINE_HEIGHT = 56, 730, 18


def _pdf_text(text):
    # The built-in Helvetica speaks Latin-1; anything else becomes "?" rather than breaking the file.
    latin = str(text).encode("latin-1", "replace").decode("latin-1")
    return latin.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _date(timestamp):
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d") if timestamp else "-"


def invoice_lines(invoice):
    """The invoice as lines of text, top to bottom."""
    currency = invoice["currency"]
    rows = [
        (18, f"Invoice {invoice['number'] or '(draft)'}"),
        (10, f"Status: {invoice['status']}"),
        (10, f"Billed to: {invoice['customer_name'] or invoice['customer_email'] or invoice['customer']}"),
        (10, f"Issued: {_date(invoice['effective_at'])}    Due: {_date(invoice['due_date'])}"),
        (10, ""),
    ]
    if invoice["description"]:
        rows.append((10, invoice["description"]))
    for line in invoice["lines"]["data"]:
        rows.append((10, f"{line['quantity']} x {line['description'] or 'Item'}    "
                         f"{format_amount(line['amount'], currency)}"))
    rows += [
        (10, ""),
        (10, f"Subtotal: {format_amount(invoice['subtotal'], currency)}"),
        (10, f"Tax: {format_amount(sum(tax['amount'] for tax in invoice['total_taxes']), currency)}"),
        (12, f"Total: {format_amount(invoice['total'], currency)}"),
        (12, f"Amount due: {format_amount(invoice['amount_remaining'], currency)}"),
    ]
    for field in invoice["custom_fields"] or []:
        rows.append((10, f"{field['name']}: {field['value']}"))
    if invoice["footer"]:
        rows += [(10, ""), (9, invoice["footer"])]
    rows.append((8, "stripe-sandbox test invoice - not a real document"))
    return rows


def invoice_pdf(invoice):
    """The PDF bytes for an invoice."""
    commands = ["BT"]
    y = TOP
    for size, text in invoice_lines(invoice):
        commands.append(f"/F1 {size} Tf 1 0 0 1 {LEFT} {y} Tm ({_pdf_text(text)}) Tj")
        y -= LINE_HEIGHT
    commands.append("ET")
    stream = "\n".join(commands).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {PAGE_WIDTH} {PAGE_HEIGHT}] "
        "/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref_at)
    return bytes(out)
