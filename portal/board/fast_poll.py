"""What the board's unchanged poll needs, from short-lived per-process caches: the board version and the poller's role.

Every open board polls every few seconds, so an unchanged poll must not touch PostgreSQL (issue 5): a pool
checkout with its pre-ping, Flask-Login's user load and the version query made it cost seven bare responses.
The caches (the version, every live staff session, and single sessions signed in since) live for
BOARD_VERSION_TTL_SECONDS (default 1 s, 0 in tests), well under the poll interval. UnchangedPollShortcut
answers such a poll before Flask builds a request: Flask's own per-request work cost more than the poll.
"""
import threading
from time import monotonic

from flask import current_app, session
from itsdangerous import BadSignature
from sqlalchemy import select
from werkzeug.http import parse_cookie

from portal.auth import sessions
from portal.board.services import board_version
from portal.extensions import db, login_manager

UNRESOLVED = object()  # the session alone cannot say who this is: Flask-Login must decide
_MAX_ENTRIES = 4096  # expired entries are dropped past this, so sessions of long-gone users cannot pile up


MISSING = object()  # peek: no entry, or an expired one
REFRESH_AFTER = 0.5  # of the TTL: past this, a poll answered from the entry reads it afresh after answering


class ShortLivedCache:
    """Values remembered for a few seconds, shared by a process's threads; one thread loads a missing key."""

    def __init__(self):
        self._entries = {}  # key → (value, monotonic time it expires, monotonic time it is due a re-read)
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()

    def get(self, key, load, ttl):
        entry = self._entries.get(key)
        if entry is not None and entry[1] > monotonic():
            return entry[0]
        # Under the lock, so that when the entry expires one thread reads the database, not all fifty.
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[1] > monotonic():
                return entry[0]
            value = load()
            self._store(key, value, ttl)
            return value

    def peek(self, key):
        """(value, due a re-read) without loading anything; (MISSING, True) when there is no unexpired entry."""
        entry = self._entries.get(key)
        now = monotonic()
        if entry is None or entry[1] <= now:
            return MISSING, True
        return entry[0], entry[2] <= now

    def refresh(self, key, load, ttl):
        """Re-read an entry, unless another thread is already re-reading one of this cache's."""
        if not self._refreshing.acquire(blocking=False):
            return
        try:
            self.put(key, load(), ttl)
        finally:
            self._refreshing.release()

    def put(self, key, value, ttl):
        with self._lock:
            self._store(key, value, ttl)

    def _store(self, key, value, ttl):
        now = monotonic()
        if len(self._entries) >= _MAX_ENTRIES:
            self._entries = {k: e for k, e in self._entries.items() if e[1] > now}
        # The expiry is fixed when stored, so a later, longer TTL cannot revive an entry read under a shorter one.
        self._entries[key] = (value, now + ttl, now + ttl * REFRESH_AFTER)


def _cache(name):
    """This app's cache of that name (per process: gunicorn workers each keep their own)."""
    key = f"board.{name}"
    return current_app.extensions.get(key) or current_app.extensions.setdefault(key, ShortLivedCache())


def _ttl():
    return current_app.config["BOARD_VERSION_TTL_SECONDS"]


def cached_board_version():
    """The board version, at most BOARD_VERSION_TTL_SECONDS old."""
    return _cache("version").get("board", board_version, _ttl())


def fresh_board_version():
    """The board version read now, remembered for the polls that follow."""
    version = board_version()
    _cache("version").put("board", version, _ttl())
    return version


def poller_role(data=None):
    """The signed-in poller's role, from the session and a short-lived cache; None when signed out; else UNRESOLVED.

    A sign-out, a deactivation or a role change reaches the poll within BOARD_VERSION_TTL_SECONDS, not on the next request:
    the price of not loading the user row on every poll. Every other route still loads it (portal.auth.services).
    `data` is the decoded session cookie when the poll is answered before Flask opens the session.
    """
    data = session if data is None else data
    user_id = data.get("_user_id")  # Flask-Login's key; absent → anonymous or a remember-me cookie to check
    mode = current_app.config.get("SESSION_PROTECTION", login_manager.session_protection)
    if user_id is None or mode == "strong":
        # "strong" protection may end the session on a changed IP or browser; only Flask-Login does that.
        # ("basic", our default, only marks the session non-fresh, which the poll never asks about.)
        return UNRESOLVED
    raw_key = data.get(sessions.SESSION_KEY)
    if not isinstance(raw_key, str) or not str(user_id).isdigit():
        return None
    # Keyed by the session, not the user: a signed-out or deactivated session is refused within the TTL,
    # while the same person's other sessions stay open.
    key = f"{user_id}:{sessions.hash_key(raw_key)}"
    role = live_staff_sessions().get(key)
    live = role is not None
    if not live:  # signed in since the list was read, not staff, or no longer live: this session's own row says
        role, live = _cache("poller_roles").get(key, lambda: sessions.role_if_live(user_id, raw_key), _ttl())
    # The idle and absolute limits are in the signed cookie: checked on every poll, at no cost.
    # A poll does not count as activity, so a board left open still times out when nobody uses it.
    return role if live and sessions.within_timeouts(role, data) else None


def live_staff_sessions():
    """"user id:key hash" → role of every live session of an active staff member, read at most once per TTL.

    One query a second per process, however many boards poll: a per-session entry would expire between one
    board's polls (3 s apart) and cost a query on nearly every poll.
    """
    return _cache("staff_sessions").get("all", _load_live_staff_sessions, _ttl())


def _load_live_staff_sessions():
    from portal.auth.models import STAFF_ROLES, User, UserSession

    rows = db.session.execute(
        select(UserSession.user_id, UserSession.key_hash, User.role).select_from(User)
        .join(UserSession, UserSession.user_id == User.id)
        .where(UserSession.ended_at.is_(None), User.active.is_(True), User.role.in_(STAFF_ROLES))).all()
    return {f"{row.user_id}:{row.key_hash}": row.role for row in rows}


def poll_version(known):
    """(version, changed) for a page holding `known`: the cached version, read afresh before calling it a change.

    The fresh read keeps the poll's answers what they were before the cache: a page loaded just now holds a
    version newer than the cache, and must get 204, not a needless re-render.
    """
    version = cached_board_version()
    if known == version:
        return version, False
    version = fresh_board_version()
    return version, known != version


class UnchangedPollShortcut:
    """WSGI middleware: answers an unchanged board poll with 204 before Flask builds a request.

    The same checks as the poll's own path (a signed session cookie; a live session of an active staff member,
    within its timeouts; the version the page holds), from the same caches, and never a database read while
    the poller waits: an entry past half its TTL is read afresh after the answer has gone. Anything the caches
    cannot vouch for (no cookie, an expired entry, a session signed in since the list was read, a changed board,
    a refusal) goes on to Flask, which answers exactly as before. Skipping Flask's request, its hooks and its
    response object is what makes an unchanged poll cost about a bare one (bench/board_polling.py).
    """

    def __init__(self, app, wsgi_app, path):
        self.app = app
        self.wsgi_app = wsgi_app
        self.path = path
        self.cookie_name = app.config["SESSION_COOKIE_NAME"]
        self.max_age = int(app.permanent_session_lifetime.total_seconds())
        from portal.security import security_headers

        # What Flask adds to the same 204: its security headers, and Vary because the answer depends on the cookie.
        self.headers = [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-cache"),
                        ("Vary", "Cookie"),
                        *security_headers("board.poll", "text/html", hsts_seconds=app.config.get("HSTS_SECONDS", 0))]

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == self.path and environ.get("REQUEST_METHOD") == "GET":
            answer = self.unchanged(environ)
            if answer is not None:
                version, due = answer
                start_response("204 NO CONTENT", [("ETag", version), *self.headers])
                return RefreshAfterResponse(self.app) if due else []
        return self.wsgi_app(environ, start_response)

    def unchanged(self, environ):
        """(version, caches due a re-read) when this poll may be answered 204 now; None to let Flask decide."""
        known = environ.get("HTTP_IF_NONE_MATCH")
        cookie = environ.get("HTTP_COOKIE")
        if not known or not cookie or environ.get("QUERY_STRING"):
            return None
        raw = parse_cookie(cookie).get(self.cookie_name)
        serializer = self.app.session_interface.get_signing_serializer(self.app)
        if not raw or serializer is None:
            return None
        try:
            data = serializer.loads(raw, max_age=self.max_age)
        except BadSignature:
            return None
        user_id, raw_key = data.get("_user_id"), data.get(sessions.SESSION_KEY)
        if user_id is None or not isinstance(raw_key, str):
            return None
        with self.app.app_context():
            if current_app.config.get("SESSION_PROTECTION", login_manager.session_protection) == "strong":
                return None
            staff, staff_due = _cache("staff_sessions").peek("all")
            version, version_due = _cache("version").peek("board")
            if staff is MISSING or version is MISSING or version != known:
                return None
            role = staff.get(f"{user_id}:{sessions.hash_key(raw_key)}")
            if role is None or not sessions.within_timeouts(role, data):
                return None
        return version, staff_due or version_due


class RefreshAfterResponse:
    """An empty WSGI body whose close() re-reads the poll's caches: after the answer, not while a poller waits."""

    def __init__(self, app):
        self.app = app

    def __iter__(self):
        return iter(())

    def close(self):
        with self.app.app_context():
            ttl = _ttl()
            _cache("staff_sessions").refresh("all", _load_live_staff_sessions, ttl)
            _cache("version").refresh("board", board_version, ttl)


def init_app(app):
    """Put the unchanged-poll shortcut in front of the app (after the board's blueprint is registered)."""
    (rule,) = app.url_map.iter_rules("board.poll")
    app.wsgi_app = UnchangedPollShortcut(app, app.wsgi_app, path=rule.rule)
