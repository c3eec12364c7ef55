"""Signed-in sessions: a new one on every sign-in, idle and absolute timeouts, and ending them server-side.

Flask's session is a signed cookie, so nothing on the server can take one back. Each sign-in
therefore writes a `user_sessions` row and puts a random key in the cookie; the user loader
accepts the cookie only while that row is not ended. Signing out ends the row (a copied cookie
is then worthless), and deactivating an account ends every row of it at once (issue 8).

The two clocks live in the signed cookie, so checking them costs no query (the board's poll
checks them too): `_auth_at` is when the person signed in, `_seen_at` when they last did
something, refreshed at most once a minute so that not every response sets a cookie.
"""
import hashlib
import secrets
import time
from datetime import timedelta

from flask import current_app, request, session
from flask_login import login_user, logout_user
from sqlalchemy import delete, or_, select, update

from portal.auth.models import Role, User, UserSession
from portal.extensions import db, is_row_id
from portal.timeutil import utcnow

SESSION_KEY = "_sid"
SIGNED_IN_AT = "_auth_at"
SEEN_AT = "_seen_at"
SEEN_RESOLUTION_SECONDS = 60
KEY_BYTES = 32  # 256 bits
# Requests a page makes by itself forever, which must not count as someone using it: the board's poll.
# (The other polls, a job's billing panel and a crew's "paid?" badge, stop once nothing more will change.)
PASSIVE_ENDPOINTS = frozenset({"board.poll"})


def clock():
    """Seconds since the epoch; the one place the session clocks read time (tests move it)."""
    return time.time()


def hash_key(raw_key):
    """The stored form of a session key."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


def limits_for(role):
    """(idle seconds, absolute seconds) for a role: crews get a working day on their phones."""
    config = current_app.config
    if role == Role.CREW:
        return config["CREW_SESSION_IDLE_MINUTES"] * 60, config["CREW_SESSION_ABSOLUTE_HOURS"] * 3600
    return config["SESSION_IDLE_MINUTES"] * 60, config["SESSION_ABSOLUTE_HOURS"] * 3600


def start_session(user):
    """Sign the user in on a brand-new session: nothing of the cookie it replaces survives (no fixation)."""
    replaced = session.get(SESSION_KEY)
    if isinstance(replaced, str):  # signing in again in the same browser: the old cookie must not stay usable
        db.session.execute(update(UserSession).where(UserSession.key_hash == hash_key(replaced),
                                                     UserSession.ended_at.is_(None))
                           .values(ended_at=utcnow(), end_reason="replaced"))
    session.clear()  # also drops the old CSRF token, so one planted before sign-in is useless after it
    raw_key = secrets.token_urlsafe(KEY_BYTES)
    forget_old_sessions(user)
    db.session.add(UserSession(user_id=user.id, key_hash=hash_key(raw_key)))
    db.session.commit()
    login_user(user, remember=False, fresh=True)
    now = clock()
    session[SESSION_KEY] = raw_key
    session[SIGNED_IN_AT] = now
    session[SEEN_AT] = now


def forget_old_sessions(user):
    """Delete the user's rows that can never be used again, so the table stays as small as the live sessions."""
    longest = max(current_app.config["SESSION_ABSOLUTE_HOURS"], current_app.config["CREW_SESSION_ABSOLUTE_HOURS"])
    db.session.execute(delete(UserSession).where(
        UserSession.user_id == user.id,
        or_(UserSession.ended_at.is_not(None), UserSession.created_at < utcnow() - timedelta(hours=longest))))


def within_timeouts(role, data=None):
    """Whether this request's cookie (or the session `data` given) is inside its role's idle and absolute limits."""
    data = session if data is None else data
    signed_in_at, seen_at = data.get(SIGNED_IN_AT), data.get(SEEN_AT)
    if not isinstance(signed_in_at, (int, float)) or not isinstance(seen_at, (int, float)):
        return False
    idle, absolute = limits_for(role)
    now = clock()
    return now - seen_at < idle and now - signed_in_at < absolute


def load_session_user(user_id):
    """The signed-in user for Flask-Login's loader: active, with a live session row, within its timeouts; else None."""
    raw_key = session.get(SESSION_KEY)
    try:
        user_id = int(user_id)
    except (TypeError, ValueError):
        return None
    if not isinstance(raw_key, str) or not is_row_id(user_id):
        return None
    user = db.session.scalar(
        select(User).join(UserSession, UserSession.user_id == User.id)
        .where(User.id == user_id, UserSession.key_hash == hash_key(raw_key), UserSession.ended_at.is_(None)))
    if user is None or not user.active or not within_timeouts(user.role):
        # The cookie is dead for good: drop it, so the browser stops sending a session nobody accepts.
        session.clear()
        return None
    if request.endpoint not in PASSIVE_ENDPOINTS and clock() - session[SEEN_AT] >= SEEN_RESOLUTION_SECONDS:
        session[SEEN_AT] = clock()
    return user


def role_if_live(user_id, raw_key):
    """(role, live) of a session without loading the user: for the board's poll, which caches the answer briefly."""
    if not isinstance(raw_key, str) or not is_row_id(int(user_id)):
        return None, False
    row = db.session.execute(
        select(User.role, User.active).join(UserSession, UserSession.user_id == User.id)
        .where(User.id == int(user_id), UserSession.key_hash == hash_key(raw_key), UserSession.ended_at.is_(None))
    ).one_or_none()
    return (row.role, row.active) if row is not None else (None, False)


def end_session(reason="signed_out"):
    """Sign out this browser: its row is ended, so the same cookie sent again (a copy, a back button) is refused."""
    raw_key = session.get(SESSION_KEY)
    if isinstance(raw_key, str):
        db.session.execute(update(UserSession).where(UserSession.key_hash == hash_key(raw_key),
                                                     UserSession.ended_at.is_(None))
                           .values(ended_at=utcnow(), end_reason=reason))
        db.session.commit()
    logout_user()
    session.clear()


def end_all_sessions(user, reason):
    """End every session of a user at once (deactivation, a password change); the caller commits."""
    result = db.session.execute(update(UserSession).where(UserSession.user_id == user.id,
                                                          UserSession.ended_at.is_(None))
                                .values(ended_at=utcnow(), end_reason=reason))
    return result.rowcount
