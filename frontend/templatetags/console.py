"""Small display filters of the console: numbers as people read them."""

from django import template
from django.utils import timezone
from django.utils.timesince import timesince

register = template.Library()


@register.filter
def percent(value: float | None, digits: int = 2) -> str:
    """0.9481 -> '94.81%'; None -> '—'."""
    if value is None:
        return "—"
    return f"{value * 100:.{digits}f}%"


@register.filter
def number(value: float | None, digits: int = 4) -> str:
    """A float with `digits` significant digits; None -> '—'."""
    if value is None:
        return "—"
    return f"{value:.{digits}g}"


@register.filter
def duration(seconds: float | None) -> str:
    """Seconds as '1h 02m', '3m 05s' or '12s'; None -> '—'."""
    if seconds is None:
        return "—"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


@register.filter
def ago(value) -> str:
    """A past moment as '3 hours ago', or 'just now' under a minute; None -> '—'."""
    if value is None:
        return "—"
    if (timezone.now() - value).total_seconds() < 60:
        return "just now"
    return f"{timesince(value)} ago"
