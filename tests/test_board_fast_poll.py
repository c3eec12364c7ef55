"""The unchanged-poll shortcut: the same answer as Flask's, from memory, and nothing it cannot vouch for."""
import pytest

from portal.extensions import db
from tests.test_board import poll, statements


@pytest.fixture
def cached(app, monkeypatch):
    """The poll's caches on, as in production (tests otherwise run with a TTL of 0); returns a clock to move."""
    from portal.board import fast_poll

    monkeypatch.setitem(app.config, "BOARD_VERSION_TTL_SECONDS", 30.0)
    clock = [0.0]
    real_monotonic = fast_poll.monotonic
    monkeypatch.setattr(fast_poll, "monotonic", lambda: real_monotonic() + clock[0])
    yield clock
    for name in ("board.version", "board.poller_roles", "board.staff_sessions"):
        app.extensions.pop(name, None)  # user ids and versions restart with the tables


@pytest.fixture
def flask_requests(app, monkeypatch):
    """How many requests got past the shortcut to Flask."""
    from portal.board.fast_poll import UnchangedPollShortcut

    shortcut = app.wsgi_app
    while not isinstance(shortcut, UnchangedPollShortcut):  # other middleware may wrap it
        shortcut = shortcut.wsgi_app
    seen = []

    def counted(environ, start_response):
        seen.append(environ["PATH_INFO"])
        return flask_app(environ, start_response)

    flask_app = shortcut.wsgi_app
    monkeypatch.setattr(shortcut, "wsgi_app", counted)
    return seen


def test_the_shortcut_answers_exactly_as_the_full_path_does(login, office, cached, flask_requests):
    board = login(office)
    version = board.get("/office/board").headers["ETag"]
    before = len(flask_requests)
    full = poll(board, version)  # the first poll reads the live sessions, through Flask
    assert full.status_code == 204 and len(flask_requests) == before + 1
    shortcut = poll(board, version)
    assert len(flask_requests) == before + 1  # answered before Flask
    assert shortcut.status_code == 204 and shortcut.get_data() == full.get_data() == b""
    assert sorted(shortcut.headers.items()) == sorted(full.headers.items())
    assert shortcut.headers["ETag"] == version and "script-src 'self'" in shortcut.headers["Content-Security-Policy"]


def test_past_half_the_ttl_the_answer_goes_first_then_the_caches_are_reread(login, office, cached):
    board = login(office)
    version = board.get("/office/board").headers["ETag"]
    assert poll(board, version).status_code == 204
    office.active = False
    db.session.commit()
    cached[0] += 16  # past half the 30 s TTL, not past it: still answered from memory, by design
    with statements() as sent:
        response = poll(board, version)
        assert response.status_code == 204
        response.close()  # as the server does once the answer is sent
    assert len(sent) == 2 and "user_sessions" in sent[0] and "max(jobs.updated_at)" in sent[1], sent
    # The re-read list no longer has the deactivated session: Flask checks its row, and signs it out.
    response = poll(board, version)
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_one_read_of_the_live_staff_sessions_serves_every_open_board(login, office, owner, cached):
    boards = [login(office), login(owner), login(office)]  # the office person on two devices
    version = boards[0].get("/office/board").headers["ETag"]  # the page primes the version cache
    with statements() as sent:
        for _ in range(3):
            assert [poll(board, version).status_code for board in boards] == [204, 204, 204]
    assert len(sent) == 1 and "user_sessions" in sent[0], sent


def test_a_tampered_cookie_or_a_crew_session_is_left_to_flask(app, login, office, crew, cached):
    board = login(office)
    version = board.get("/office/board").headers["ETag"]
    cookie_name = app.config["SESSION_COOKIE_NAME"]
    real = board.get_cookie(cookie_name).value
    board.set_cookie(cookie_name, real[:-2] + ("AA" if not real.endswith("AA") else "BB"))
    response = poll(board, version)
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert poll(login(crew), version).status_code == 404
