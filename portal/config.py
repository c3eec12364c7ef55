"""Configuration classes; every value comes from the environment."""
import os
import secrets
from pathlib import Path

INSTANCE_DIR = Path(__file__).resolve().parent.parent / "instance"


def _required(name):
    """Return an environment variable, failing loudly at boot when it is missing."""
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} must be set (see .env.example)")
    return value


def _int(name, default):
    return int(os.environ.get(name, default))


class Config:
    """Production: secrets have no defaults."""

    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
    MAX_CONTENT_LENGTH = 64 * 1024 * 1024  # a request may carry several photos
    PHOTO_MAX_BYTES = 20 * 1024 * 1024
    PHOTO_MAX_PIXELS = 60_000_000  # above this Pillow's own bomb check is the backstop
    WTF_CSRF_TIME_LIMIT = None  # tokens live as long as the session; crews keep pages open all day
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = True
    REMEMBER_COOKIE_SECURE = True
    DEMO_PAGES = False
    PASSWORD_HASH_METHOD = "scrypt"

    def __init__(self):
        self.SECRET_KEY = _required("SECRET_KEY")
        self.SQLALCHEMY_DATABASE_URI = normalise_database_url(_required("DATABASE_URL"))
        self.REDIS_URL = os.environ.get("REDIS_URL") or None
        self.RQ_QUEUE_PREFIX = os.environ.get("RQ_QUEUE_PREFIX", "closeout")
        self.UPLOAD_DIR = os.environ.get("UPLOAD_DIR") or str(INSTANCE_DIR / "uploads")
        self.STRIPE_SECRET_KEY = os.environ.get("STRIPE_SECRET_KEY") or None
        self.STRIPE_WEBHOOK_SECRET = os.environ.get("STRIPE_WEBHOOK_SECRET") or None
        self.STRIPE_API_BASE = os.environ.get("STRIPE_API_BASE") or None
        self.STRIPE_TIMEOUT_SECONDS = float(os.environ.get("STRIPE_TIMEOUT_SECONDS", "20"))
        self.SMTP_HOST = os.environ.get("SMTP_HOST", "localhost")
        self.SMTP_PORT = _int("SMTP_PORT", 25)
        self.MAIL_FROM = os.environ.get("MAIL_FROM", "billing@closeout.invalid")
        self.SMTP_USERNAME = os.environ.get("SMTP_USERNAME") or None
        self.SMTP_PASSWORD = os.environ.get("SMTP_PASSWORD") or None
        self.SMTP_STARTTLS = os.environ.get("SMTP_STARTTLS", "").lower() in ("1", "true", "yes")
        self.OFFICE_EMAIL = os.environ.get("OFFICE_EMAIL") or self.MAIL_FROM
        self.COPY_OFFICE_ON_BILLS = os.environ.get("COPY_OFFICE_ON_BILLS", "").lower() in ("1", "true", "yes")
        self.EMAIL_MAX_ATTACHMENT_BYTES = _int("EMAIL_MAX_ATTACHMENT_BYTES", 8 * 1024 * 1024)
        # Where customers reach this portal (links in emails); no trailing slash.
        self.BILLING_RETRY_SECONDS = os.environ.get("BILLING_RETRY_SECONDS", "5,30,120,600")
        self.PUBLIC_URL = os.environ.get("PUBLIC_URL", "http://localhost:5000").rstrip("/")
        self.BUSINESS_NAME = os.environ.get("BUSINESS_NAME", "Closeout Services")
        self.BUSINESS_LOGO_PATH = os.environ.get("BUSINESS_LOGO_PATH") or None
        self.BUSINESS_TIMEZONE = os.environ.get("BUSINESS_TIMEZONE", "UTC")
        # Percent, as a decimal string ("8.25"): the business's sales tax on taxable lines.
        self.SALES_TAX_PERCENT = os.environ.get("SALES_TAX_PERCENT", "0")
        # Payment sync: who hears when Stripe events fail, and how long a silent endpoint may stay silent.
        self.ALERT_EMAIL = os.environ.get("ALERT_EMAIL") or self.OFFICE_EMAIL
        self.WEBHOOK_SILENCE_WARNING_HOURS = _int("WEBHOOK_SILENCE_WARNING_HOURS", 24)
        self.BOARD_VERSION_TTL_SECONDS = float(os.environ.get("BOARD_VERSION_TTL_SECONDS", "1.0"))  # board poll caches


class DevelopmentConfig(Config):
    """`make demo`: SQLite, in-process jobs unless REDIS_URL is set, a throwaway secret."""

    SESSION_COOKIE_SECURE = False
    REMEMBER_COOKIE_SECURE = False
    DEMO_PAGES = True

    def __init__(self):
        os.environ.setdefault("SECRET_KEY", secrets.token_hex(32))
        os.environ.setdefault("DATABASE_URL", f"sqlite:///{INSTANCE_DIR / 'closeout.db'}")
        super().__init__()
        self.SALES_TAX_PERCENT = os.environ.get("SALES_TAX_PERCENT", "8.25")


class TestConfig(Config):
    """The test suite: real PostgreSQL and Redis, URLs chosen by tests/conftest.py."""

    TESTING = True
    PASSWORD_HASH_METHOD = "pbkdf2:sha256:1000"  # tests create hundreds of users; strength is not under test
    SESSION_COOKIE_SECURE = False
    REMEMBER_COOKIE_SECURE = False

    def __init__(self):
        os.environ.setdefault("SECRET_KEY", "test-secret-key")
        os.environ.setdefault("DATABASE_URL", "postgresql://127.0.0.1:5432/test")
        super().__init__()
        self.BOARD_VERSION_TTL_SECONDS = float(os.environ.get("BOARD_VERSION_TTL_SECONDS", "0"))  # every poll re-reads


CONFIGS = {"production": Config, "development": DevelopmentConfig, "test": TestConfig}


def normalise_database_url(url):
    """Point plain postgres URLs at psycopg 3, which is the driver we ship."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def load_config(name=None):
    """Build the config object named by the argument or CLOSEOUT_ENV (default: production)."""
    name = name or os.environ.get("CLOSEOUT_ENV", "production")
    return CONFIGS[name]()
