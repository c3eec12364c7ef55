"""Referral fee math, in integer minor units (issue 6, "Fee rules").

A fee is a percentage (basis points) of its base, or a flat amount per paid job, then raised to an optional
minimum and lowered to an optional cap, rounded half up to the cent, and never negative nor more than was
paid. The base is the pre-tax subtotal's share of what was paid, or all of what was paid.
"""
from dataclasses import asdict, dataclass
from decimal import Decimal

from portal.money import round_half_up
from portal.referrals.models import FeeBase, FeeKind

RULE_FIELDS = ("fee_kind", "fee_basis_points", "fee_flat", "fee_base", "fee_minimum", "fee_cap")
BASIS_POINTS = 10_000


@dataclass(frozen=True)
class FeeRule:
    """The rule a payout is computed with: a partner's default with a referral's non-NULL overrides."""

    kind: FeeKind = FeeKind.PERCENT
    basis_points: int = 0
    flat: int = 0
    base: FeeBase = FeeBase.SUBTOTAL
    minimum: int | None = None
    cap: int | None = None

    def as_json(self):
        """The rule as stored on the payout, for the accountant."""
        values = asdict(self)
        values["kind"], values["base"] = self.kind.value, self.base.value
        return values


def rule_for(partner, referral=None):
    """The partner's rule, each column overridden by the referral's when the referral sets it."""
    values = {}
    for field in RULE_FIELDS:
        value = getattr(referral, field, None) if referral is not None else None
        values[field] = value if value is not None else getattr(partner, field)
    return FeeRule(
        kind=FeeKind(values["fee_kind"] or FeeKind.PERCENT),
        basis_points=values["fee_basis_points"] or 0,
        flat=values["fee_flat"] or 0,
        base=FeeBase(values["fee_base"] or FeeBase.SUBTOTAL),
        minimum=values["fee_minimum"],
        cap=values["fee_cap"],
    )


def fee_base_amount(rule, *, paid, subtotal, total):
    """What the percentage applies to: all of `paid`, or the pre-tax subtotal's share of it."""
    paid = max(paid, 0)
    if rule.base == FeeBase.TOTAL or total <= 0:
        return paid
    return min(paid, round_half_up(Decimal(paid) * subtotal / total))


@dataclass(frozen=True)
class Fee:
    base_amount: int
    amount: int


def compute_fee(rule, *, paid, subtotal, total):
    """The fee for a payment of `paid` on a bill of `subtotal` + tax = `total` (all minor units)."""
    paid = max(paid, 0)
    base = fee_base_amount(rule, paid=paid, subtotal=subtotal, total=total)
    if rule.kind == FeeKind.FLAT:
        amount = rule.flat
    else:
        amount = round_half_up(Decimal(base) * rule.basis_points / BASIS_POINTS)
    if rule.minimum is not None:
        amount = max(amount, rule.minimum)
    if rule.cap is not None:
        amount = min(amount, rule.cap)
    return Fee(base_amount=base, amount=min(max(amount, 0), paid))


def reversal_target(fee, *, refunded, paid):
    """How much of `fee` is reversed in all once `refunded` of `paid` went back: proportional, half up, capped."""
    if paid <= 0 or refunded >= paid:
        return fee
    if refunded <= 0:
        return 0
    return min(fee, round_half_up(Decimal(fee) * refunded / paid))


def reversal_step(fee, *, refunded, paid, already_reversed):
    """What to reverse now: the cumulative target less what earlier steps reversed, so the steps sum exactly."""
    return max(reversal_target(fee, refunded=refunded, paid=paid) - already_reversed, 0)
