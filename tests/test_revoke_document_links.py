"""Staff revoke a customer's document links from the job's billing box; a resent email carries a new one."""
import html
import re

import pytest
from sqlalchemy import select

from portal.audit.models import AuditEntry
from portal.audit.services import Actor
from portal.billing.emails import resend_bill_email, send_bill_email
from tests import factories
from tests.fixtures.billing import billed_record, pdf_bytes

LINK = re.compile(r"http://portal\.example/d/([A-Za-z0-9_-]+)")


@pytest.fixture
def mailed(app, db, smtp_server):
    """A sent bill whose proof is too large to attach, so the email carries a /d/<token> link."""
    saved = {name: app.config.get(name) for name in ("EMAIL_MAX_ATTACHMENT_BYTES", "PUBLIC_URL", "SMTP_HOST",
                                                      "SMTP_PORT")}
    app.config.update(EMAIL_MAX_ATTACHMENT_BYTES=2000, PUBLIC_URL="http://portal.example", SMTP_HOST=smtp_server.host,
                      SMTP_PORT=smtp_server.port)
    billed = billed_record(proof=pdf_bytes(padding=5000))
    send_bill_email(billed.record, by=factories.system())
    yield billed
    app.config.update(saved)


def link_tokens(smtp_server):
    return [LINK.findall(message.get_body(("html",)).get_content())[0] for message in smtp_server.messages]


def opens(client, token):
    with client.get(f"/d/{token}") as response:
        return response.status_code


def revoke(browser, job):
    response = browser.htmx("POST", f"/office/jobs/{job.id}/billing/revoke-links", headers={"HX-Target": "billing"})
    body = response.get_data(as_text=True)
    assert response.status_code == 200 and body.lstrip().startswith('<section id="billing"'), body[:300]
    return html.unescape(body)


def test_revoking_stops_the_link_and_a_resend_issues_a_new_one(app, db, client, login, office, mailed, smtp_server):
    (token,) = link_tokens(smtp_server)
    assert opens(client, token) == 200
    browser = login(office)
    page = browser.get(f"/office/jobs/{mailed.job.id}").get_data(as_text=True)
    assert "Revoke customer links (1)" in page and "hx-confirm=\"Stop the 1 customer link to" in page

    body = revoke(browser, mailed.job)

    assert "Customer links revoked" in body and "Revoke customer links" not in body
    assert opens(client, token) == 404
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "document_links.revoked"))
    assert entry.job_id == mailed.job.id and entry.actor_label == Actor.for_user(office).label

    resend_bill_email(mailed.record, by=Actor.for_user(office))

    first, second = link_tokens(smtp_server)
    assert first == token and second != token
    assert opens(client, second) == 200 and opens(client, token) == 404
    assert "Revoke customer links (1)" in browser.get(f"/office/jobs/{mailed.job.id}").get_data(as_text=True)


def test_revoking_with_no_open_link_is_refused_and_changes_nothing(db, login, office, mailed):
    browser = login(office)
    revoke(browser, mailed.job)
    body = revoke(browser, mailed.job)
    assert "No customer link to this job's proof is open." in body
    assert db.session.query(AuditEntry).filter_by(action="document_links.revoked").count() == 1


def test_a_plain_form_post_goes_back_to_the_job_page(client, db, login, office, mailed, smtp_server):
    (token,) = link_tokens(smtp_server)
    response = login(office).post_form(f"/office/jobs/{mailed.job.id}/billing/revoke-links")
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/office/jobs/{mailed.job.id}#billing")
    assert opens(client, token) == 404
