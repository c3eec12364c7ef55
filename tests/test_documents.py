"""Customer document links: `/d/<token>` opens a proof PDF for a valid token and 404s for anything else."""
import hashlib
import secrets
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from portal.audit.models import AuditEntry
from portal.billing.models import DocumentLink
from portal.documents.services import document_url, issue_document_link, revoke_document_links
from portal.extensions import db as _db
from portal.photos.storage import get_storage
from portal.timeutil import utcnow
from tests import factories
from tests.fixtures.billing import billed_record

PRIVATE_HEADERS = {"Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
                   "Cache-Control": "private, no-store"}


@pytest.fixture
def billed(db):
    return billed_record()


def issue(billed, **kwargs):
    token = issue_document_link(billed.record.trigger, **kwargs)
    _db.session.commit()
    return token


def get(client, token):
    with client.get(f"/d/{token}") as response:
        return response.status_code, response.data, response.headers


def test_a_link_opens_the_proof_pdf_without_signing_in(client, billed):
    token = issue(billed)

    status, body, headers = get(client, token)

    assert status == 200
    assert body == billed.proof
    assert headers["Content-Type"] == "application/pdf"
    assert f"proof-of-work-{billed.job.number}.pdf" in headers["Content-Disposition"]
    for name, value in PRIVATE_HEADERS.items():
        assert headers[name] == value


def test_tokens_have_at_least_128_random_bits_and_only_their_hash_is_stored(db, billed):
    tokens = [issue(billed) for _ in range(3)]

    assert len(set(tokens)) == 3
    assert all(len(token) >= 43 for token in tokens)  # token_urlsafe(32): 256 bits
    stored = db.session.scalars(select(DocumentLink).order_by(DocumentLink.id)).all()
    assert [link.token_hash for link in stored] == [hashlib.sha256(t.encode()).hexdigest() for t in tokens]
    # The raw token is in no column of the table.
    rows = db.session.execute(text("SELECT * FROM document_links")).all()
    assert not any(token in str(value) for row in rows for value in row for token in tokens)
    assert document_url(tokens[0]).endswith(f"/d/{tokens[0]}")


def expired(billed):
    token = issue(billed)
    link = _db.session.scalar(select(DocumentLink).where(DocumentLink.token_hash == hashlib.sha256(token.encode())
                                                          .hexdigest()))
    link.expires_at = utcnow() - timedelta(seconds=1)
    _db.session.commit()
    return token


def revoked(billed):
    token = issue(billed)
    revoke_document_links(billed.record.trigger, by=factories.system())
    _db.session.commit()
    return token


def stored_hash(billed):
    issue(billed)
    return _db.session.scalar(select(DocumentLink.token_hash))  # what a leaked database would show


def file_gone(billed):
    token = issue(billed)
    get_storage().delete(billed.record.trigger.proof_pdf_key)
    return token


@pytest.mark.parametrize("make_token", [
    expired,
    revoked,
    stored_hash,
    file_gone,
    lambda billed: secrets.token_urlsafe(32),  # well formed, never issued
    lambda billed: "short",
    lambda billed: issue(billed)[:-1],
    lambda billed: issue(billed) + "A",
], ids=["expired", "revoked", "the-stored-hash", "pdf-deleted", "random", "too-short", "truncated", "extended"])
def test_anything_but_a_valid_token_is_404(client, billed, make_token):
    status, body, headers = get(client, make_token(billed))

    assert status == 404
    assert b"%PDF" not in body
    assert headers["Referrer-Policy"] == "no-referrer"


def test_paths_outside_the_token_space_are_404(client, billed):
    issue(billed)
    for path in ("/d/", "/d/..%2F..%2Fetc%2Fpasswd", f"/d/{'A' * 43}/x", "/d/%00"):
        assert get(client, path.removeprefix("/d/"))[0] == 404, path


def test_revoking_closes_every_link_of_that_proof_and_no_other(db, client, billed):
    other = billed_record()
    first, second, others = issue(billed), issue(billed, days=1), issue(other)

    revoked_links = revoke_document_links(billed.record.trigger, by=factories.system())
    db.session.commit()

    assert len(revoked_links) == 2
    assert get(client, first)[0] == get(client, second)[0] == 404
    assert get(client, others)[0] == 200
    assert db.session.scalar(select(AuditEntry).where(AuditEntry.action == "document_links.revoked")).job_id == \
        billed.job.id
