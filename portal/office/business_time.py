"""Times as the office reads and types them: shown in BUSINESS_TIMEZONE, stored as aware UTC."""
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from flask import current_app


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
