"""`make demo`'s mail: the SMTP catcher keeps each message, and the dev-only outbox page shows it."""
import re

import pytest
from flask import Flask

from portal import create_app
from portal.billing.emails import send_bill_email
from portal.config import Config, load_config
from portal.demo import views as demo_views
from portal.demo.mailcatcher import start_mailcatcher
from portal.extensions import db as _db
from tests import factories
from tests.fixtures.billing import billed_record


@pytest.fixture(scope="module")
def _migrated_app(_migrated_app):
    """The test app with DEMO_PAGES on, as DevelopmentConfig sets it (TestConfig, like production, leaves it off)."""
    config = load_config("test")
    config.DEMO_PAGES = True
    app = create_app(config)
    app.test_client_class = _migrated_app.test_client_class
    yield app
    with app.app_context():
        _db.engine.dispose()


@pytest.fixture
def outbox(app, tmp_path):
    """The demo's catcher on a free loopback port, writing into a fresh outbox directory."""
    directory = tmp_path / "outbox"
    controller, port = start_mailcatcher(directory)
    saved = {name: app.config.get(name) for name in ("SMTP_HOST", "SMTP_PORT", "DEMO_OUTBOX_DIR",
                                                     "COPY_OFFICE_ON_BILLS", "OFFICE_EMAIL")}
    app.config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=port, DEMO_OUTBOX_DIR=str(directory))
    yield directory
    controller.stop()
    app.config.update(saved)


@pytest.fixture
def caught(app, db, outbox):
    """One bill, sent through the catcher: (its .eml name, the Billed it was for)."""
    app.config.update(COPY_OFFICE_ON_BILLS=True, OFFICE_EMAIL="office@bayport.example")
    billed = billed_record(factories.client(name="Gloria Ramirez", billing_emails=["gloria@example.net"]), photos=1)
    send_bill_email(billed.record, by=factories.system())
    names = [path.name for path in outbox.iterdir()]
    assert len(names) == 1
    return names[0], billed


def test_the_catcher_keeps_the_message_with_its_envelope(outbox, caught):
    name, billed = caught

    raw = (outbox / name).read_bytes()

    assert re.fullmatch(r"\d{8}T\d{12}Z-[0-9a-f]{8}\.eml", name)
    assert b"X-RcptTo: gloria@example.net, office@bayport.example\r\n" in raw  # the Bcc copy shows here only
    assert f"Subject: Job {billed.job.number}: $170.00 due".encode() in raw


def test_staff_see_what_the_customer_received_pdf_included(login, office, caught):
    name, billed = caught
    browser = login(office)

    listing = browser.get("/_demo/outbox")
    assert listing.status_code == 200
    page = listing.get_data(as_text=True)
    assert f"Job {billed.job.number}: $170.00 due" in page
    assert f'href="/_demo/outbox/{name}"' in page
    assert "1 attachment" in page

    shown = browser.get(f"/_demo/outbox/{name}")
    assert shown.status_code == 200
    page = shown.get_data(as_text=True)
    assert 'sandbox="allow-popups allow-popups-to-escape-sandbox"' in page  # no scripts, no same origin
    frame = re.search(r'srcdoc="([^"]*)"', page).group(1)
    assert "Pay $170.00" in frame and "default-src &#39;none&#39;" in frame
    assert "cid:" not in frame and "data:image/jpeg;base64," in frame  # the photo shows without any request
    assert "Reply-To" in page and "office@bayport.example" in page
    assert "https://example.test/pay/x" in page  # the plain-text part
    download = re.search(rf'href="(/_demo/outbox/{name}/\d+)"[^>]*>proof-of-work-{billed.job.number}\.pdf', page)

    with browser.get(download.group(1)) as pdf:
        assert pdf.status_code == 200
        assert pdf.mimetype == "application/pdf"
        assert pdf.headers["Content-Disposition"].startswith("attachment")
        assert pdf.data == billed.proof


def test_an_empty_outbox_says_so(login, owner, outbox):
    page = login(owner).get("/_demo/outbox").get_data(as_text=True)
    assert "No mail yet" in page


@pytest.mark.parametrize("role", ["crew", "partner"])
def test_only_staff_can_open_the_outbox(login, caught, role):
    name, _ = caught
    browser = login(factories.user(role))
    for url in ("/_demo/outbox", f"/_demo/outbox/{name}", f"/_demo/outbox/{name}/0"):
        assert browser.get(url).status_code == 404, url


def test_signed_out_visitors_are_sent_to_sign_in(client, caught):
    name, _ = caught
    for url in ("/_demo/outbox", f"/_demo/outbox/{name}", f"/_demo/outbox/{name}/0"):
        response = client.get(url)
        assert response.status_code == 302 and "/login" in response.headers["Location"], url


def test_names_that_are_not_caught_messages_are_404(login, office, outbox, caught):
    name, _ = caught
    (outbox.parent / "secret.eml").write_text("Subject: not in the outbox\r\n\r\nx")
    browser = login(office)
    for url in ("/_demo/outbox/..%2Fsecret.eml", "/_demo/outbox/secret.eml", f"/_demo/outbox/{name[:-4]}",
                "/_demo/outbox/20260101T000000000000Z-00000000.eml", f"/_demo/outbox/{name}/99"):
        assert browser.get(url).status_code == 404, url


def test_production_has_no_outbox_at_all(app, caught, monkeypatch):
    name, _ = caught
    monkeypatch.setenv("SECRET_KEY", "production-secret")  # the production config requires both
    monkeypatch.setenv("DATABASE_URL", app.config["SQLALCHEMY_DATABASE_URI"])
    production = create_app(Config())
    try:
        assert production.config["DEMO_PAGES"] is False
        assert "demo" not in production.blueprints
        visitor = production.test_client()
        for url in ("/_demo/outbox", f"/_demo/outbox/{name}", f"/_demo/outbox/{name}/0"):
            assert visitor.get(url).status_code == 404, url  # not a sign-in redirect: the page does not exist
    finally:
        with production.app_context():
            _db.engine.dispose()


def test_init_app_registers_the_demo_pages_only_where_the_config_enables_them(app, monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "production-secret")
    monkeypatch.setenv("DATABASE_URL", app.config["SQLALCHEMY_DATABASE_URI"])
    for config, registered in ((Config(), False), (load_config("test"), False), (load_config("development"), True)):
        candidate = Flask("candidate")
        candidate.config.from_object(config)
        demo_views.init_app(candidate)
        assert ("demo" in candidate.blueprints) is registered, type(config).__name__


def test_a_demo_blueprint_registered_by_mistake_still_answers_404(app, login, office, caught):
    name, _ = caught
    browser = login(office)
    app.config["DEMO_PAGES"] = False
    try:
        assert browser.get("/_demo/outbox").status_code == 404
        assert browser.get(f"/_demo/outbox/{name}/0").status_code == 404
    finally:
        app.config["DEMO_PAGES"] = True
