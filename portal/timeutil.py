"""Timezone-aware UTC time, the only kind Closeout stores, and the business's calendar for display."""
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from flask import current_app
from sqlalchemy import DateTime
from sqlalchemy.types import TypeDecorator


def utcnow():
    """Now, as an aware UTC datetime."""
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """A timestamp column that always hands back aware UTC datetimes, SQLite included."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use timeutil.utcnow()")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


# The business's calendar: times are shown and typed in BUSINESS_TIMEZONE, stored as aware UTC.

def business_zone():
    """The zone the business schedules in (config BUSINESS_TIMEZONE)."""
    return ZoneInfo(current_app.config["BUSINESS_TIMEZONE"])


def to_business_time(moment):
    """An aware UTC datetime as the business's wall-clock time."""
    return moment.astimezone(business_zone())


def day_start_utc(day):
    """Midnight at the start of `day` in the business's zone, as aware UTC."""
    return datetime.combine(day, time.min, tzinfo=business_zone()).astimezone(timezone.utc)


def day_end_utc(day):
    """Midnight after `day` in the business's zone, as aware UTC (an exclusive bound)."""
    return day_start_utc(day + timedelta(days=1))


def format_business_time(moment, pattern="%a %b %d, %Y %I:%M %p"):
    """Display text for a stored timestamp; an empty string when there is none."""
    if moment is None:
        return ""
    return to_business_time(moment).strftime(pattern)
