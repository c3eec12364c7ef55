"""Sign in and out."""
import hashlib
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_limiter import RateLimitExceeded
from flask_login import current_user, login_required

from portal.auth import sessions
from portal.auth.forms import LoginForm
from portal.auth.services import authenticate, home_endpoint_for
from portal.extensions import limiter

bp = Blueprint("auth", __name__)


def safe_next(target):
    """Only same-site relative paths; anything else would be an open redirect."""
    if not target:
        return None
    # Browsers drop tabs and newlines from URLs and read "\\" as "/", so "/\t/evil.example" or
    # "/\\evil.example" would leave the site; no control character or space has a place in our paths.
    if not target.isprintable() or any(character.isspace() or character == "\\" for character in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target


def failed_sign_in(response):
    """Only refused passwords count against the limits: people who sign in fine are never slowed."""
    return response.status_code == 401


def sign_in_address():
    """The client's address (behind a proxy, as TRUSTED_PROXY_COUNT lets ProxyFix read it)."""
    return request.remote_addr or "unknown"


def sign_in_account():
    """The account being tried, hashed: Redis keys stay short and hold no email addresses."""
    email = (request.form.get("email") or "").strip().lower()[:254]
    return hashlib.sha256(email.encode()).hexdigest()


def sign_in_address_and_account():
    """One address trying one account: the tightest limit, which a typo-prone person never reaches."""
    return f"{sign_in_address()}|{sign_in_account()}"


@bp.route("/")
def index():
    if current_user.is_authenticated:
        return redirect(url_for(home_endpoint_for(current_user)))
    return redirect(url_for("auth.login"))


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["LOGIN_LIMIT_PER_ADDRESS_AND_ACCOUNT"], key_func=sign_in_address_and_account,
               methods=["POST"], deduct_when=failed_sign_in, scope="login-address-account")
@limiter.limit(lambda: current_app.config["LOGIN_LIMIT_PER_ACCOUNT"], key_func=sign_in_account,
               methods=["POST"], deduct_when=failed_sign_in, scope="login-account")
@limiter.limit(lambda: current_app.config["LOGIN_LIMIT_PER_ADDRESS"], key_func=sign_in_address,
               methods=["POST"], deduct_when=failed_sign_in, scope="login-address")
def login():
    form = LoginForm()
    if form.validate_on_submit():
        user = authenticate(form.email.data, form.password.data)
        if user is not None:
            sessions.start_session(user)
            return redirect(safe_next(request.args.get("next")) or url_for(home_endpoint_for(user)))
        flash("Wrong email or password.", "error")
        return render_template("auth/login.html", form=form), 401
    return render_template("auth/login.html", form=form)


@bp.errorhandler(RateLimitExceeded)
def too_many_sign_ins(error):
    """The sign-in form again, saying why it refuses and for how long; the right password is refused too."""
    form = LoginForm()
    window = "a minute" if error.limit.limit.get_expiry() <= 60 else "an hour"  # Retry-After says exactly
    message = f"Too many failed sign-ins. Try again within {window}, or ask the office to check your account."
    return render_template("auth/login.html", form=form, refusal=message), 429


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    sessions.end_session()
    flash("Signed out.", "info")
    response = redirect(url_for("auth.login"))
    # The crew app's offline store (issue 9): caches, IndexedDB and the service worker go with the
    # session, so the next person on this phone sees none of it; offline.js also clears them first.
    response.headers["Clear-Site-Data"] = '"cache", "storage"'
    return response

