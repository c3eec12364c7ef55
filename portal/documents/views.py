"""Customers' document links: `GET /d/<token>` opens a proof-of-work PDF. Customers never sign in."""
from flask import Blueprint, send_file

from portal.documents import services as documents

bp = Blueprint("documents", __name__)


@bp.after_request
def keep_links_private(response):
    """The token is the URL: never pass it on as a Referer, never let a shared cache keep what it opens."""
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    return response


@bp.get("/<token>")
def proof_pdf(token):
    """The proof-of-work PDF behind a valid, unexpired, unrevoked link."""
    trigger = documents.get_document_for(token)
    return send_file(documents.open_proof_pdf(trigger), mimetype="application/pdf",
                     download_name=f"proof-of-work-{trigger.job.number}.pdf", etag=False)
