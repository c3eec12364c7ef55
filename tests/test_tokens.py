"""Tokens that open something without a password (issue 8): customers' document links, API tokens and
session keys. Each has at least 128 random bits, is stored only as a hash, and can be ended;
customers' links also expire.
"""
import base64
import collections
import logging
import secrets
import string
from datetime import timedelta

import pytest
from sqlalchemy import select, text, update

from portal.audit.models import AuditEntry
from portal.auth.models import ApiToken
from portal.billing.models import DocumentLink
from portal.documents.services import create_document_link, hash_token, revoke_document_links
from portal.extensions import db as _db
from portal.timeutil import utcnow
from tests import factories
from tests.fixtures.billing import billed_record

URLSAFE = set(string.ascii_letters + string.digits + "-_")
ISSUED = 400  # document links issued for the randomness figures
GUESSES = 2_000  # well-formed tokens that were never issued


@pytest.fixture
def billed(db):
    return billed_record()


def open_link(client, token):
    with client.get(f"/d/{token}") as response:
        return response.status_code


def every_stored_value():
    """Every value of every row of every table: where a raw token must never be."""
    values = []
    for table in _db.metadata.sorted_tables:
        for row in _db.session.execute(text(f'SELECT * FROM "{table.name}"')):
            values.extend(str(value) for value in row if value is not None)
    return values


def test_document_links_have_256_random_bits_and_look_it(db, billed):
    tokens = [create_document_link(billed.record.trigger)[1] for _ in range(ISSUED)]
    db.session.commit()

    assert len(set(tokens)) == ISSUED
    for token in tokens:
        assert set(token) <= URLSAFE
        assert len(base64.urlsafe_b64decode(token + "=")) == 32  # 256 bits; the floor is 128
    # Every one of the 64 symbols turns up in every position's worth of draws, near evenly: not a counter,
    # a timestamp or a short alphabet. (The 43rd character carries 4 bits only, so it is left out.)
    counts = collections.Counter(character for token in tokens for character in token[:42])
    expected = ISSUED * 42 / 64
    assert len(counts) == 64
    assert all(0.6 * expected < count < 1.4 * expected for count in counts.values()), counts.most_common(3)
    # Two tokens share no long common prefix (a sequence or a clock would).
    assert max(len(_common_prefix(a, b)) for a, b in zip(sorted(tokens), sorted(tokens)[1:])) <= 4


def _common_prefix(first, second):
    length = 0
    while length < min(len(first), len(second)) and first[length] == second[length]:
        length += 1
    return first[:length]


def test_only_the_hash_of_a_document_link_is_stored_anywhere(db, billed, client, caplog):
    caplog.set_level(logging.DEBUG)
    link, token = create_document_link(billed.record.trigger)
    db.session.commit()
    assert open_link(client, token) == 200

    assert link.token_hash == hash_token(token) and len(link.token_hash) == 64
    assert not any(token in value for value in every_stored_value())
    assert token not in caplog.text


def test_a_link_stops_opening_the_moment_it_expires(db, billed, client):
    link, token = create_document_link(billed.record.trigger)
    db.session.commit()
    assert timedelta(days=59) < link.expires_at - utcnow() <= timedelta(days=60)  # 60 days by default

    db.session.execute(update(DocumentLink).where(DocumentLink.id == link.id)
                       .values(expires_at=utcnow() + timedelta(minutes=1)))
    db.session.commit()
    assert open_link(client, token) == 200
    db.session.execute(update(DocumentLink).where(DocumentLink.id == link.id)
                       .values(expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    assert open_link(client, token) == 404


def test_revoking_ends_a_links_use_at_once_and_is_audited(db, billed, client):
    _, token = create_document_link(billed.record.trigger)
    other = billed_record()
    _, others_token = create_document_link(other.record.trigger)
    db.session.commit()
    assert open_link(client, token) == 200

    revoke_document_links(billed.record.trigger, by=factories.system())
    db.session.commit()

    assert open_link(client, token) == 404
    assert open_link(client, others_token) == 200
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "document_links.revoked"))
    assert entry.job_id == billed.job.id and entry.detail["count"] == 1


def test_guessing_finds_nothing(db, billed, client):
    create_document_link(billed.record.trigger)
    db.session.commit()
    opened = sum(open_link(client, secrets.token_urlsafe(32)) != 404 for _ in range(GUESSES))
    assert opened == 0


def test_api_tokens_are_random_hashed_and_revocable(db, client):
    token, raw = ApiToken.issue("bookkeeping")
    db.session.add(token)
    db.session.commit()
    auth = {"Authorization": f"Bearer {raw}"}
    assert client.get("/api/v1/clients", headers=auth).status_code == 200

    assert len(base64.urlsafe_b64decode(raw.removeprefix("co_") + "=")) == 32  # 256 bits
    assert not any(raw in value for value in every_stored_value())
    assert db.session.scalar(select(ApiToken.token_hash)) == ApiToken.hash(raw)

    token.revoked_at = utcnow()
    db.session.commit()
    assert client.get("/api/v1/clients", headers=auth).status_code == 401
