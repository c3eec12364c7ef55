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
    # __Host-: the browser keeps it only if Secure, path / and no Domain, so no sibling subdomain can plant one.
    SESSION_COOKIE_NAME = "__Host-closeout"
    REMEMBER_COOKIE_SECURE = True
    REMEMBER_COOKIE_HTTPONLY = True
    REMEMBER_COOKIE_SAMESITE = "Lax"
    RATELIMIT_HEADERS_ENABLED = True  # Retry-After on a 429
    RATELIMIT_IN_MEMORY_FALLBACK_ENABLED = True  # Redis down: limits per process rather than none or a 500
    HSTS_SECONDS = 365 * 24 * 3600
    DEMO_PAGES = False
    PASSWORD_HASH_METHOD = "scrypt"

    def __init__(self):
        self.SECRET_KEY = _required("SECRET_KEY")
        self.SQLALCHEMY_DATABASE_URI = normalise_database_url(_required("DATABASE_URL"))
        self.REDIS_URL = os.environ.get("REDIS_URL") or None
        self.RQ_QUEUE_PREFIX = os.environ.get("RQ_QUEUE_PREFIX", "closeout")
        # Flask-Limiter counts failed sign-ins in Redis, shared by every web process; the demo has no Redis.
        self.RATELIMIT_STORAGE_URI = self.REDIS_URL or "memory://"
        self.RATELIMIT_KEY_PREFIX = self.RQ_QUEUE_PREFIX
        self.RATELIMIT_STORAGE_OPTIONS = {"key_prefix": f"{self.RQ_QUEUE_PREFIX}-limits"} if self.REDIS_URL else {}
        # Sessions (portal/auth/sessions.py): idle and absolute limits. Crews get a working day between
        # sign-ins on a phone that sits in a pocket between jobs; office, owner and partners 30 idle minutes.
        self.SESSION_IDLE_MINUTES = _int("SESSION_IDLE_MINUTES", 30)
        self.SESSION_ABSOLUTE_HOURS = _int("SESSION_ABSOLUTE_HOURS", 12)
        self.CREW_SESSION_IDLE_MINUTES = _int("CREW_SESSION_IDLE_MINUTES", 8 * 60)
        self.CREW_SESSION_ABSOLUTE_HOURS = _int("CREW_SESSION_ABSOLUTE_HOURS", 16)
        # Failed sign-ins (portal/auth/views.py), in Flask-Limiter's notation: per address and account,
        # per account from anywhere, per address over all accounts.
        self.LOGIN_LIMIT_PER_ADDRESS_AND_ACCOUNT = os.environ.get("LOGIN_LIMIT_PER_ADDRESS_AND_ACCOUNT",
                                                                  "5/minute;20/hour")
        self.LOGIN_LIMIT_PER_ACCOUNT = os.environ.get("LOGIN_LIMIT_PER_ACCOUNT", "50/hour")
        self.LOGIN_LIMIT_PER_ADDRESS = os.environ.get("LOGIN_LIMIT_PER_ADDRESS", "100/hour")
        # How many reverse proxies set X-Forwarded-For/-Proto in front of gunicorn: without it every
        # sign-in seems to come from the proxy's address and the per-address limit would be one for all.
        self.TRUSTED_PROXY_COUNT = _int("TRUSTED_PROXY_COUNT", 0)
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
        self.BILLING_RETRY_SECONDS = os.environ.get("BILLING_RETRY_SECONDS", "5,30,120,600")
        # How long a worker's claim on a trigger or batch lasts: a worker killed mid-run holds it no longer.
        self.BILLING_LEASE_SECONDS = _int("BILLING_LEASE_SECONDS", 300)
        # Where customers reach this portal (links in emails); no trailing slash.
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
    SESSION_COOKIE_NAME = "closeout"  # plain http on localhost: a __Host- cookie needs Secure
    REMEMBER_COOKIE_SECURE = False
    HSTS_SECONDS = 0  # never pin localhost to https
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
    SESSION_COOKIE_NAME = "closeout"
    REMEMBER_COOKIE_SECURE = False
    HSTS_SECONDS = 0

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
