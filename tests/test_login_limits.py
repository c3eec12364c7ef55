"""Failed sign-ins are limited (issue 8): per address and account, per account, per address, counted in Redis.

Limits (config, README): 5 a minute and 20 an hour for one address trying one account; 50 an hour
for one account from anywhere; 100 an hour from one address over all accounts. Only refused
passwords count. Once a limit is reached even the right password is refused until it resets.
"""
import time

import pytest
from redis import Redis

from portal import create_app
from portal.config import load_config
from portal.extensions import db, limiter
from tests import factories

WRONG = "not the password at all"


@pytest.fixture(autouse=True)
def fresh_limits(app):
    limiter.reset()
    yield
    limiter.reset()


def attempt(client, email, password, address="203.0.113.7"):
    """One sign-in from an address (REMOTE_ADDR), as the browser posts it."""
    return client.post_form("/login", {"email": email, "password": password},
                            environ_base={"REMOTE_ADDR": address})


def test_the_sixth_failure_in_a_minute_is_refused_even_with_the_right_password(client, office):
    statuses = [attempt(client, office.email, WRONG).status_code for _ in range(5)]
    refused = attempt(client, office.email, factories.PASSWORD)

    assert statuses == [401] * 5
    assert refused.status_code == 429
    page = refused.get_data(as_text=True)
    assert "Too many failed sign-ins. Try again within a minute" in page and 'name="password"' in page
    assert int(refused.headers["Retry-After"]) > 0
    assert "_user_id" not in _session_of(client)


def _session_of(client):
    with client.session_transaction() as session:
        return dict(session)


def test_the_limit_is_for_that_account_from_that_address_only(app, client, office, owner):
    for _ in range(5):
        attempt(client, office.email, WRONG)
    assert attempt(client, office.email, factories.PASSWORD).status_code == 429

    # The same address signs in to another account; the same account signs in from another address.
    assert attempt(app.test_client(), owner.email, factories.PASSWORD).status_code == 302
    assert attempt(app.test_client(), office.email, factories.PASSWORD, address="198.51.100.20").status_code == 302


def test_the_account_is_recognised_whatever_the_case_and_spaces(client, office):
    for variant in (office.email, office.email.upper(), f"  {office.email}  ", office.email.title(), office.email):
        assert attempt(client, variant, WRONG).status_code == 401
    assert attempt(client, office.email.upper(), factories.PASSWORD).status_code == 429


def test_signing_in_successfully_never_counts(app, office):
    for _ in range(25):  # more than the minute's and the hour's limits
        assert attempt(app.test_client(), office.email, factories.PASSWORD).status_code == 302


def test_the_limit_resets_when_its_window_has_passed(app, client, office, monkeypatch):
    monkeypatch.setitem(app.config, "LOGIN_LIMIT_PER_ADDRESS_AND_ACCOUNT", "3/2second")
    for _ in range(3):
        attempt(client, office.email, WRONG)
    assert attempt(client, office.email, factories.PASSWORD).status_code == 429

    time.sleep(2.1)

    assert attempt(client, office.email, factories.PASSWORD).status_code == 302


def test_one_account_tried_from_many_addresses_is_limited(app, client, office, owner, monkeypatch):
    monkeypatch.setitem(app.config, "LOGIN_LIMIT_PER_ACCOUNT", "4/hour")  # 50 in production: 4 keeps it short
    for number in range(4):
        assert attempt(client, office.email, WRONG, address=f"198.51.100.{number}").status_code == 401

    assert attempt(client, office.email, factories.PASSWORD, address="192.0.2.99").status_code == 429
    assert attempt(client, owner.email, factories.PASSWORD, address="192.0.2.99").status_code == 302


def test_one_address_trying_many_accounts_is_limited(app, client, office, monkeypatch):
    monkeypatch.setitem(app.config, "LOGIN_LIMIT_PER_ADDRESS", "4/hour")  # 100 in production
    for number in range(4):
        assert attempt(client, f"guess{number}@example.test", WRONG).status_code == 401

    assert attempt(client, office.email, factories.PASSWORD).status_code == 429
    assert attempt(client, office.email, factories.PASSWORD, address="198.51.100.5").status_code == 302


def test_failures_are_counted_in_redis_so_every_web_process_sees_them(app, client, office, redis_url):
    for _ in range(5):
        attempt(client, office.email, WRONG)
    prefix = app.config["RATELIMIT_STORAGE_OPTIONS"]["key_prefix"]
    assert list(Redis.from_url(redis_url).scan_iter(f"{prefix}:*"))  # the counts are in Redis, not in this process

    # A second app, as a second gunicorn worker would be, refuses the same account from the same address.
    other_process = create_app(load_config("test"))
    other_process.test_client_class = type(client)
    try:
        with other_process.app_context():
            assert attempt(other_process.test_client(), office.email, factories.PASSWORD).status_code == 429
    finally:
        with other_process.app_context():
            db.engine.dispose()


def test_a_limited_sign_in_changes_nothing_and_other_pages_are_not_limited(app, client, office, login):
    for _ in range(5):
        attempt(client, office.email, WRONG)
    browser = login(factories.user("office"))
    for _ in range(10):
        assert browser.get("/office/board").status_code == 200
    assert attempt(client, office.email, factories.PASSWORD).status_code == 429
    assert client.get("/office/board").status_code == 302  # still signed out
