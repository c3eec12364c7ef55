"""Stripe's list conventions: newest first, `limit`, `starting_after` / `ending_before`, `created` ranges."""

from stripe_sandbox.errors import StripeError, resource_missing
from stripe_sandbox.shapes import list_object

COMPARISONS = {
    "gt": lambda value, bound: value > bound,
    "gte": lambda value, bound: value >= bound,
    "lt": lambda value, bound: value < bound,
    "lte": lambda value, bound: value <= bound,
}


def filter_created(items, created):
    """Keep items whose `created` matches an exact time or a `{gt, gte, lt, lte}` range."""
    if created is None:
        return items
    if isinstance(created, int):
        return [item for item in items if item["created"] == created]
    return [
        item for item in items
        if all(COMPARISONS[op](item["created"], bound) for op, bound in created.items())
    ]


def paginate(items, params, url):
    """One page of a list, as Stripe cuts it."""
    limit = params.get("limit", 10)
    if not 1 <= limit <= 100:
        raise StripeError("Invalid limit: must be between 1 and 100", param="limit")
    after, before = params.get("starting_after"), params.get("ending_before")
    if after and before:
        raise StripeError(
            "You may only specify one of these parameters: ending_before, starting_after.",
            code="parameters_exclusive", param="ending_before",
        )
    ids = [item["id"] for item in items]
    if after:
        if after not in ids:
            raise resource_missing("object", after, "starting_after")
        rest = items[ids.index(after) + 1:]
        return list_object(rest[:limit], url, has_more=len(rest) > limit)
    if before:
        if before not in ids:
            raise resource_missing("object", before, "ending_before")
        earlier = items[:ids.index(before)]
        return list_object(earlier[-limit:], url, has_more=len(earlier) > limit)
    return list_object(items[:limit], url, has_more=len(items) > limit)


def list_matching(items, params, url, filters=None):
    """Filter by `created` and by equality on the given fields, then paginate.

    `filters` maps a parameter name to a function that reads the compared value from an item.
    """
    for param, read in (filters or {}).items():
        if param in params:
            wanted = params[param]
            items = [item for item in items if read(item) == wanted]
    return paginate(filter_created(items, params.get("created")), params, url)
