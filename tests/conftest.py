"""Fixtures: a fresh PostgreSQL database per run, real Redis, an app, clients and a login per role."""
import os
import re
import threading
import uuid

import psycopg
import pytest
from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy import text
from werkzeug.serving import make_server

from tests import factories

pytest_plugins = [
    "tests.fixtures.stripe_sandbox", "tests.fixtures.smtp", "tests.fixtures.worker", "tests.fixtures.browser",
]

ADMIN_DSN = os.environ.get("TEST_ADMIN_DATABASE_URL", "postgresql://127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN_ID = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
CSRF_PATTERN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|"X-CSRFToken": "([^"]+)"')


class PortalClient(FlaskClient):
    """A test client that can fetch a CSRF token the way a browser would, from a page."""

    def open(self, *args, **kwargs):
        # The fixture's app context outlives requests, so `g` would carry one browser's
        # signed-in user and CSRF token into the next browser's request.
        from flask import g

        for cached in ("_login_user", "csrf_token"):
            g.pop(cached, None)
        return super().open(*args, **kwargs)

    def csrf_token(self):
        page = self.get("/login").get_data(as_text=True)
        match = CSRF_PATTERN.search(page)
        assert match, "no CSRF token on /login"
        return match.group(1) or match.group(2)

    def post_form(self, url, data=None, **kwargs):
        """POST a form with its CSRF token, as the browser does."""
        data = dict(data or {})
        data.setdefault("csrf_token", self.csrf_token())
        return self.post(url, data=data, **kwargs)

    def htmx(self, method, url, data=None, **kwargs):
        """An htmx request: HX-Request plus the CSRF token in the X-CSRFToken header."""
        headers = {"HX-Request": "true", "X-CSRFToken": self.csrf_token(), **kwargs.pop("headers", {})}
        return self.open(url, method=method, data=data, headers=headers, **kwargs)


@pytest.fixture(scope="session")
def database_url():
    """A database of our own for this run, migrated with the real Alembic migrations."""
    name = f"closeout_test_{RUN_ID}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url():
    connection = Redis.from_url(REDIS_URL)
    connection.ping()
    yield REDIS_URL
    from rq import Queue

    prefix = f"closeout-test-{RUN_ID}"
    for key in connection.scan_iter(f"rq:queue:{prefix}*"):
        Queue(key.decode().removeprefix("rq:queue:"), connection=connection).empty()
    for key in connection.scan_iter(f"*{prefix}*"):
        connection.delete(key)


@pytest.fixture(scope="session")
def _migrated_app(database_url, redis_url, tmp_path_factory):
    os.environ["CLOSEOUT_ENV"] = "test"
    os.environ["DATABASE_URL"] = database_url
    os.environ["REDIS_URL"] = redis_url
    os.environ["UPLOAD_DIR"] = str(tmp_path_factory.mktemp("uploads"))
    os.environ["RQ_QUEUE_PREFIX"] = f"closeout-test-{RUN_ID}"
    os.environ.setdefault("SALES_TAX_PERCENT", "0")
    from flask_migrate import upgrade

    from portal import create_app
    from portal.config import load_config

    app = create_app(load_config("test"))
    app.test_client_class = PortalClient
    with app.app_context():
        upgrade()
    yield app
    with app.app_context():
        from portal.extensions import db

        db.engine.dispose()  # before the database is dropped under it
        receiver_engine = app.extensions.pop("closeout_receiver_engine", None)
        if receiver_engine is not None:  # the webhook receiver's own autocommit engine
            receiver_engine.dispose()


@pytest.fixture
def app(_migrated_app):
    """The app, with every table emptied after the test."""
    app = _migrated_app
    app.config.update(SALES_TAX_PERCENT="0")
    with app.app_context():
        yield app
        from portal.extensions import db

        db.session.remove()
        from portal.queue import QUEUE_NAMES, get_queue

        for name in QUEUE_NAMES:  # ids restart with the tables, so old jobs would name new rows
            get_queue(name).empty()
        from portal.payments.services import drain_marker

        get_queue().connection.delete(drain_marker())  # "a drain is queued" would be false now: it was emptied
        from portal.extensions import limiter

        limiter.reset()  # failed sign-ins of one test must not lock out the next
        tables = ", ".join(f'"{table.name}"' for table in db.metadata.sorted_tables)
        with db.engine.begin() as connection:
            connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
def embedded_sqlite(tmp_path, monkeypatch):
    """The newcomer's default instead: a fresh SQLite file migrated by Alembic, its app context pushed."""
    from flask_migrate import upgrade

    from portal import create_app
    from portal.config import load_config
    from portal.extensions import db

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'closeout.db'}")
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("UPLOAD_DIR", str(tmp_path / "uploads"))
    sqlite_app = create_app(load_config("development"))
    with sqlite_app.app_context():
        upgrade()
        yield sqlite_app
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def db(app):
    from portal.extensions import db

    return db


@pytest.fixture
def client(app):
    return app.test_client()


PASSWORD = factories.PASSWORD


@pytest.fixture
def login(app):
    """login(user) → a client signed in through the real login form."""

    def sign_in(user):
        client = app.test_client()
        response = client.post_form("/login", {"email": user.email, "password": PASSWORD})
        assert response.status_code == 302, f"login failed for {user.email}"
        return client

    return sign_in


@pytest.fixture
def crew(db):
    return factories.user("crew", name="Casey Crew")


@pytest.fixture
def other_crew(db):
    return factories.user("crew", name="Robin Other")


@pytest.fixture
def office(db):
    return factories.user("office", name="Olive Office")


@pytest.fixture
def owner(db):
    return factories.user("owner", name="Omar Owner")


@pytest.fixture
def partner(db):
    return factories.user("partner", name="Pat Partner")


@pytest.fixture
def other_partner(db):
    return factories.user("partner", name="Quinn Otherpartner")


@pytest.fixture
def live_server(app):
    """The app served over real HTTP on a free loopback port, for browsers and webhooks."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_port}"
    yield server
    server.shutdown()
    thread.join(timeout=5)
