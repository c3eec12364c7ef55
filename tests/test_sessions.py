"""Sessions (issue 8): a new session on sign-in, idle and absolute timeouts, and ending sessions server-side.

A signed cookie cannot be taken back, so these tests keep a copy of a browser's cookie and send
it again after the session should be over: the server must refuse the copy, not just the browser.
"""
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select, text

from portal.audit.services import Actor
from portal.auth import sessions
from portal.auth.models import UserSession
from portal.auth.services import deactivate_user
from portal.extensions import limiter
from tests import factories

COOKIE = "closeout"  # SESSION_COOKIE_NAME outside production (production: __Host-closeout)
POLL = {"HX-Request": "true", "If-None-Match": "stale"}


@pytest.fixture(autouse=True)
def fresh_limits(app):
    limiter.reset()  # sign-in limits from another test must not refuse these sign-ins
    yield
    limiter.reset()


@pytest.fixture
def clock(monkeypatch):
    """The sessions' clock, moved forward by hand: clock.advance(minutes=31)."""
    real = sessions.clock

    class Clock:
        offset = 0.0

        def advance(self, *, minutes=0, hours=0):
            self.offset += minutes * 60 + hours * 3600

    moved = Clock()
    monkeypatch.setattr(sessions, "clock", lambda: real() + moved.offset)
    return moved


def copy_of(client, app):
    """A second browser holding a copy of this browser's session cookie (a stolen or backed-up cookie)."""
    other = app.test_client()
    other.set_cookie(COOKIE, client.get_cookie(COOKIE).value)
    return other


def signed_in(response):
    """Whether a request for a page got the page rather than a trip to the sign-in form."""
    return response.status_code == 200


def sign_in(client, user, **kwargs):
    return client.post_form("/login", {"email": user.email, "password": factories.PASSWORD}, **kwargs)


# --- A new session on sign-in ----------------------------------------------------------------------

def test_signing_in_replaces_everything_the_browser_held_before(app, client, office):
    client.get("/login")
    with client.session_transaction() as planted:  # what an attacker could have fixed in the victim's browser
        planted["_sid"] = "chosen-by-the-attacker"
        planted["planted"] = "value"
    old_form_token = client.csrf_token()

    assert sign_in(client, office).status_code == 302

    with client.session_transaction() as current:
        assert "planted" not in current
        assert current["_sid"] != "chosen-by-the-attacker"
        assert current["_user_id"] == str(office.id)
    # The CSRF token known before signing in (and so possibly to an attacker) no longer works.
    assert client.post("/logout", data={"csrf_token": old_form_token}).status_code == 400
    assert signed_in(client.get("/office/board"))


def test_each_sign_in_gets_its_own_random_key_stored_only_as_a_hash(app, db, office, login):
    first, second = login(office), login(office)

    keys = []
    for browser in (first, second):
        with browser.session_transaction() as session:
            keys.append(session["_sid"])
    assert keys[0] != keys[1]
    assert all(len(key) >= 43 for key in keys)  # token_urlsafe(32): 256 bits
    rows = db.session.scalars(select(UserSession).where(UserSession.user_id == office.id)).all()
    assert sorted(row.key_hash for row in rows) == sorted(sessions.hash_key(key) for key in keys)
    stored = db.session.execute(text("SELECT * FROM user_sessions")).all()
    assert not any(key in str(value) for row in stored for value in row for key in keys)


def test_signing_in_again_in_the_same_browser_ends_the_session_it_replaces(app, login, office, crew):
    browser = login(office)
    earlier_copy = copy_of(browser, app)

    assert sign_in(browser, crew).status_code == 302

    assert signed_in(browser.get("/crew/jobs"))
    assert earlier_copy.get("/office/board").status_code == 302


# --- Ending sessions server-side -------------------------------------------------------------------

def test_a_copy_of_the_cookie_is_refused_after_sign_out(app, login, office):
    browser = login(office)
    copy = copy_of(browser, app)
    assert signed_in(copy.get("/office/board"))

    response = browser.post_form("/logout")

    assert response.status_code == 302 and urlsplit(response.headers["Location"]).path == "/login"
    replayed = copy.get("/office/board")
    assert replayed.status_code == 302 and "/login" in replayed.headers["Location"]
    assert browser.get("/office/board").status_code == 302


def test_signing_out_one_browser_leaves_the_same_persons_other_browser_signed_in(app, login, office):
    desk, phone = login(office), login(office)

    phone.post_form("/logout")

    assert signed_in(desk.get("/office/board"))
    assert phone.get("/office/board").status_code == 302


def test_deactivation_ends_every_session_at_once_and_reactivating_does_not_revive_them(app, db, login, crew):
    phone, tablet = login(crew), login(crew)
    assert signed_in(phone.get("/crew/jobs")) and signed_in(tablet.get("/crew/jobs"))

    ended = deactivate_user(crew, by=Actor.system("tests"))
    db.session.commit()

    assert ended == 2
    assert phone.get("/crew/jobs").status_code == 302
    assert tablet.get("/crew/jobs").status_code == 302
    crew.active = True  # the office undoes the mistake: the person signs in again, old cookies stay dead
    db.session.commit()
    assert copy_of(tablet, app).get("/crew/jobs").status_code == 302
    assert signed_in(login(crew).get("/crew/jobs"))


def test_the_cli_deactivates_and_ends_sessions(app, db, login, office):
    browser = login(office)

    result = app.test_cli_runner().invoke(args=["users", "deactivate", office.email.upper()])

    assert result.exit_code == 0, result.output
    assert "ended 1 session" in result.output
    assert browser.get("/office/board").status_code == 302


# --- Idle and absolute timeouts --------------------------------------------------------------------

def test_office_sessions_end_after_30_idle_minutes(app, login, office, clock):
    browser = login(office)
    clock.advance(minutes=29)
    assert signed_in(browser.get("/office/board"))  # activity: the idle clock starts again
    clock.advance(minutes=29)
    assert signed_in(browser.get("/office/board"))
    clock.advance(minutes=31)
    response = browser.get("/office/board")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_crew_phones_stay_signed_in_between_jobs_but_not_overnight(app, login, crew, clock):
    phone = login(crew)
    clock.advance(hours=3)  # a long job with the phone in a pocket
    assert signed_in(phone.get("/crew/jobs"))
    clock.advance(hours=7, minutes=59)
    assert signed_in(phone.get("/crew/jobs"))
    clock.advance(hours=8, minutes=1)  # overnight
    assert phone.get("/crew/jobs").status_code == 302


def test_activity_cannot_stretch_a_session_past_its_absolute_limit(app, login, office, clock):
    browser = login(office)
    for _ in range(35):  # busy all day: a request every 20 minutes for 11 h 40 min
        clock.advance(minutes=20)
        assert signed_in(browser.get("/office/board"))
    clock.advance(minutes=21)  # 12 h 1 min after signing in
    assert browser.get("/office/board").status_code == 302


def test_the_timeouts_are_configuration(app, login, office, clock, monkeypatch):
    monkeypatch.setitem(app.config, "SESSION_IDLE_MINUTES", 5)
    browser = login(office)
    clock.advance(minutes=6)
    assert browser.get("/office/board").status_code == 302


# --- The board's cached poll -----------------------------------------------------------------------

@pytest.fixture
def cached_polls(app, monkeypatch):
    """The board poll's caches on, as in production (tests otherwise run with a TTL of 0)."""
    from portal.board import fast_poll

    monkeypatch.setitem(app.config, "BOARD_VERSION_TTL_SECONDS", 30.0)
    step = [0.0]
    real_monotonic = fast_poll.monotonic
    monkeypatch.setattr(fast_poll, "monotonic", lambda: real_monotonic() + step[0])
    yield lambda: step.__setitem__(0, step[0] + 31.0)
    for name in ("board.version", "board.poller_roles"):
        app.extensions.pop(name, None)


def test_a_signed_out_session_is_refused_by_the_board_poll_within_its_ttl(app, db, login, office, cached_polls):
    board = login(office)
    copy = copy_of(board, app)
    assert copy.get("/office/board/poll", headers=POLL).status_code == 200  # primes the cached role
    board.post_form("/logout")

    cached_polls()

    refused = copy.get("/office/board/poll", headers=POLL)
    assert refused.status_code == 302 and "/login" in refused.headers["Location"]


def test_a_deactivated_session_is_refused_by_the_board_poll(app, db, login, office):
    board = login(office)
    assert board.get("/office/board/poll", headers=POLL).status_code == 200

    deactivate_user(office, by=Actor.system("tests"))
    db.session.commit()

    assert board.get("/office/board/poll", headers=POLL).status_code == 302


def test_polling_is_not_activity_so_an_unattended_board_times_out(app, login, office, clock):
    board = login(office)
    for _ in range(9):  # a poll every 3 s would do the same; every 3 minutes keeps the test short
        clock.advance(minutes=3)
        assert board.get("/office/board/poll", headers=POLL).status_code == 200
    clock.advance(minutes=4)  # 31 minutes since anyone did anything
    assert board.get("/office/board/poll", headers=POLL).status_code == 302


# --- Where sign-in sends you -----------------------------------------------------------------------

# "/%0a/evil.example" is a path on our own site: browsers do not decode %0a in a Location.
LOCAL_NEXT = ["/office/jobs", "/office/jobs?status=completed&q=a%20b", "/crew/jobs/1", "/%0a/evil.example"]
FOREIGN_NEXT = [
    "https://evil.example/", "//evil.example/", "///evil.example/", "/\\evil.example/", "\\\\evil.example",
    "/\t/evil.example/", "/\n/evil.example", " //evil.example", "http:evil.example", "https:/evil.example",
    "javascript:alert(1)", "JaVaScRiPt:alert(1)", "data:text/html,<script>alert(1)</script>", "evil.example",
    "@evil.example", "/\u3000/evil.example", "\x00//evil.example",
]


def browser_target(location):
    """Where a browser goes for a Location header: it drops tabs and newlines and reads \\ as /."""
    cleaned = location.replace("\t", "").replace("\n", "").replace("\r", "").replace("\\", "/").strip()
    parts = urlsplit(cleaned)
    return parts.scheme, parts.netloc


@pytest.mark.parametrize("target", FOREIGN_NEXT)
def test_next_never_leaves_the_site(client, office, target):
    response = client.post_form("/login", {"email": office.email, "password": factories.PASSWORD},
                                query_string={"next": target})

    assert response.status_code == 302
    scheme, host = browser_target(response.headers["Location"])
    assert scheme in ("", "http") and host in ("", "localhost"), response.headers["Location"]
    assert urlsplit(response.headers["Location"]).path == "/office/jobs"  # the office's home, not the target


@pytest.mark.parametrize("target", LOCAL_NEXT)
def test_next_to_a_page_of_ours_is_followed(client, office, target):
    response = client.post_form("/login", {"email": office.email, "password": factories.PASSWORD},
                                query_string={"next": target})

    assert response.status_code == 302
    assert response.headers["Location"] == target
