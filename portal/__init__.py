"""Closeout: from 'crew finished the job' to 'customer paid, partner paid, books right'."""
from flask import Flask

from portal import cli, errors, log_redaction, security
from portal.config import load_config
from portal.extensions import csrf, db, htmx, limiter, login_manager, migrate


def create_app(config=None):
    """Build the app: extensions, blueprints, error handlers and CLI commands; nothing else."""
    app = Flask(__name__, instance_relative_config=False)
    app.config.from_object(config if config is not None else load_config())
    log_redaction.init_app(app)  # keys, tokens and link tokens never reach a log line (issue 8)

    import portal.models  # noqa: F401  (mappers and migrations need every model)

    db.init_app(app)
    migrate.init_app(app, db, directory=str(app.root_path + "/../migrations"))
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please sign in."
    csrf.init_app(app)
    htmx.init_app(app)
    limiter.init_app(app)  # failed sign-ins, counted in Redis (memory:// without REDIS_URL)
    security.init_app(app)  # CSP and the other headers on every response

    from portal.auth import services as _auth_services  # noqa: F401  (registers the user loader)
    from portal.api.views import bp as api_bp
    from portal.auth.views import bp as auth_bp
    from portal.board import fast_poll as board_fast_poll
    from portal.board.views import bp as board_bp
    from portal.crew.views import bp as crew_bp
    from portal.dashboard.views import bp as dashboard_bp
    from portal.demo import views as demo_views
    from portal.documents.views import bp as documents_bp
    from portal.office.views import bp as office_bp
    from portal.payments import receiver as stripe_receiver
    from portal.payments.views import bp as payments_bp
    from portal.photos.views import bp as photos_bp
    from portal.referrals.views import portal_bp as partner_portal_bp
    from portal.referrals.views import staff_bp as partners_bp

    app.register_blueprint(auth_bp)
    app.register_blueprint(crew_bp, url_prefix="/crew")
    app.register_blueprint(office_bp, url_prefix="/office")
    app.register_blueprint(board_bp, url_prefix="/office/board")
    app.register_blueprint(dashboard_bp, url_prefix="/office/dashboard")  # staff; exports and audit: owner
    app.register_blueprint(photos_bp, url_prefix="/photos")
    app.register_blueprint(partners_bp, url_prefix="/office")  # partner setup, attribution, payouts ledger: staff
    app.register_blueprint(partner_portal_bp, url_prefix="/partner")  # the partner portal: partner logins only
    app.register_blueprint(api_bp, url_prefix="/api/v1")
    app.register_blueprint(payments_bp)  # /webhooks/stripe (signed, no login) and /webhooks/issues (staff)
    app.register_blueprint(documents_bp, url_prefix="/d")  # customers' links: no login, hashed tokens
    demo_views.init_app(app)  # development only: the caught-mail outbox
    csrf.exempt(api_bp)  # bearer tokens, not cookies: CSRF cannot ride on them
    board_fast_poll.init_app(app)  # an unchanged board poll is answered before Flask builds a request
    stripe_receiver.init_app(app)  # so is a Stripe delivery: verify, store once, hand to the worker

    errors.init_app(app)
    cli.init_app(app)
    register_template_helpers(app)
    return app


def register_template_helpers(app):
    from portal.money import format_money

    app.jinja_env.filters["money"] = format_money
    app.jinja_env.autoescape = True
