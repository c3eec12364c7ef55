"""Extension instances, bound to the app in create_app()."""
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from htmx_flask import Htmx
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

# Named constraints keep Alembic migrations identical on PostgreSQL and SQLite.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)

# Row ids are PostgreSQL integers: a larger number in a URL names no row, and PostgreSQL would
# refuse to compare it, so it must be a 404 before it reaches a query.
MAX_ROW_ID = 2**31 - 1
ROW_ID = f"int(min=1, max={MAX_ROW_ID})"  # URL converter for row ids


def is_row_id(value):
    """Whether value could be a row id at all."""
    return isinstance(value, int) and 0 < value <= MAX_ROW_ID


def row_id_arg(text):
    """`type=` for request.args.get: a row id or page number, else ValueError so the default applies."""
    value = int(text)
    if not is_row_id(value):
        raise ValueError(f"{text!r} is not a row id")  # PostgreSQL would refuse it in a comparison or OFFSET
    return value
migrate = Migrate(compare_type=True, render_as_batch=True)
login_manager = LoginManager()
csrf = CSRFProtect()
htmx = Htmx()
# No default limits: only routes that say so are limited (sign-in); storage and prefix come from config.
limiter = Limiter(key_func=get_remote_address)
