"""What the board's unchanged poll needs, from short-lived per-process caches: the board version and the poller's role.

Every open board polls every few seconds, so an unchanged poll must not touch PostgreSQL (issue 5): a pool
checkout with its pre-ping, Flask-Login's user load and the version query made it cost seven bare responses.
Both caches live for BOARD_VERSION_TTL_SECONDS (default 1 s, 0 in tests), well under the poll interval.
"""
import threading
from time import monotonic

from flask import current_app, session

from portal.auth import sessions
from portal.board.services import board_version
from portal.extensions import login_manager

UNRESOLVED = object()  # the session alone cannot say who this is: Flask-Login must decide
_MAX_ENTRIES = 4096  # expired entries are dropped past this, so sessions of long-gone users cannot pile up


class ShortLivedCache:
    """Values remembered for a few seconds, shared by a process's threads; one thread loads a missing key."""

    def __init__(self):
        self._entries = {}  # key → (value, monotonic time it expires)
        self._lock = threading.Lock()

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

    def put(self, key, value, ttl):
        with self._lock:
            self._store(key, value, ttl)

    def _store(self, key, value, ttl):
        now = monotonic()
        if len(self._entries) >= _MAX_ENTRIES:
            self._entries = {k: e for k, e in self._entries.items() if e[1] > now}
        # The expiry is fixed when stored, so a later, longer TTL cannot revive an entry read under a shorter one.
        self._entries[key] = (value, now + ttl)


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


def poller_role():
    """The signed-in poller's role, from the session and a short-lived cache; None when signed out; else UNRESOLVED.

    A sign-out, a deactivation or a role change reaches the poll within BOARD_VERSION_TTL_SECONDS, not on the next request:
    the price of not loading the user row on every poll. Every other route still loads it (portal.auth.services).
    """
    user_id = session.get("_user_id")  # Flask-Login's key; absent → anonymous or a remember-me cookie to check
    mode = current_app.config.get("SESSION_PROTECTION", login_manager.session_protection)
    if user_id is None or mode == "strong":
        # "strong" protection may end the session on a changed IP or browser; only Flask-Login does that.
        # ("basic", our default, only marks the session non-fresh, which the poll never asks about.)
        return UNRESOLVED
    raw_key = session.get(sessions.SESSION_KEY)
    if not isinstance(raw_key, str) or not str(user_id).isdigit():
        return None
    # Keyed by the session, not the user: a signed-out or deactivated session is refused within the TTL,
    # while the same person's other sessions stay open.
    role, live = _cache("poller_roles").get(f"{user_id}:{sessions.hash_key(raw_key)}",
                                            lambda: sessions.role_if_live(user_id, raw_key), _ttl())
    # The idle and absolute limits are in the signed cookie: checked on every poll, at no cost.
    # A poll does not count as activity, so a board left open still times out when nobody uses it.
    return role if live and sessions.within_timeouts(role) else None


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
