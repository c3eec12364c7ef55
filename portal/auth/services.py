"""Signing in, roles, and creating accounts."""
from functools import wraps

from flask import abort
from flask_login import current_user
from sqlalchemy import func, select

from portal.audit.services import record
from portal.auth.models import Role, User
from portal.auth.sessions import end_all_sessions, load_session_user
from portal.errors import ServiceError
from portal.extensions import db, login_manager

MIN_PASSWORD_LENGTH = 10


@login_manager.user_loader
def load_user(user_id):
    """The signed-in user, if the session's server-side row is live and inside its timeouts (auth/sessions.py)."""
    return load_session_user(user_id)


def roles_required(*roles):
    """Only signed-in users with one of these roles; others get 404, as if the page were not there."""

    def decorator(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if current_user.role not in roles:
                abort(404)
            return view(*args, **kwargs)

        return wrapped

    return decorator


def find_user_by_email(email):
    return db.session.scalar(select(User).where(func.lower(User.email) == (email or "").strip().lower()))


def authenticate(email, password):
    """The active user with these credentials, or None."""
    user = find_user_by_email(email)
    if user is None or not user.active or not user.check_password(password or ""):
        return None
    return user


def create_user(*, email, name, role, password):
    """A new account; passwords are hashed and must be at least MIN_PASSWORD_LENGTH long."""
    email = (email or "").strip().lower()
    if "@" not in email:
        raise ServiceError("Enter a valid email address.", {"email": "invalid"})
    if find_user_by_email(email) is not None:
        raise ServiceError("That email already has an account.", {"email": "taken"})
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise ServiceError(f"Passwords need at least {MIN_PASSWORD_LENGTH} characters.", {"password": "too short"})
    user = User(email=email, name=name or email.split("@")[0], role=Role(role))
    user.set_password(password)
    db.session.add(user)
    db.session.flush()
    return user


def home_endpoint_for(user):
    """Where a user lands after signing in."""
    return {
        Role.CREW: "crew.my_jobs",
        Role.OFFICE: "office.jobs",
        Role.OWNER: "dashboard.page",
        Role.PARTNER: "partner.home",
    }[user.role]


def deactivate_user(user, *, by):
    """Stop an account from signing in and end every session it has, at once; the caller commits."""
    if user.active:
        user.active = False
        record(by, "user.deactivated", user, field="active", old=True, new=False)
    ended = end_all_sessions(user, "deactivated")
    return ended
