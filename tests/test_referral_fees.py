"""Referral fee math (issue 6, "Fee rules"): property tests against a Decimal reference, and the overrides."""
from decimal import ROUND_HALF_UP, Decimal
from types import SimpleNamespace

from hypothesis import given, settings, strategies as st

from portal.referrals.fees import FeeRule, compute_fee, reversal_step, reversal_target, rule_for
from portal.referrals.models import FeeBase, FeeKind

CENTS = st.integers(min_value=0, max_value=10_000_000)
OPTIONAL_CENTS = st.none() | st.integers(min_value=0, max_value=1_000_000)


@st.composite
def bills(draw):
    """(subtotal, total, paid): tax on top of the subtotal, and a payment of up to the total."""
    subtotal = draw(CENTS)
    total = subtotal + draw(st.integers(min_value=0, max_value=2_000_000))
    paid = draw(st.integers(min_value=0, max_value=total))
    return subtotal, total, paid


@st.composite
def rules(draw):
    return FeeRule(kind=draw(st.sampled_from(FeeKind)), basis_points=draw(st.integers(0, 10_000)),
                   flat=draw(st.integers(0, 1_000_000)), base=draw(st.sampled_from(FeeBase)),
                   minimum=draw(OPTIONAL_CENTS), cap=draw(OPTIONAL_CENTS))


def cents(value):
    return int(value.quantize(Decimal("1"), rounding=ROUND_HALF_UP))


def reference_fee(rule, subtotal, total, paid):
    """The issue's rule written out longhand with Decimals."""
    if rule.base == FeeBase.TOTAL or total == 0:
        base = Decimal(paid)
    else:
        base = Decimal(min(paid, cents(Decimal(paid) * Decimal(subtotal) / Decimal(total))))
    fee = Decimal(rule.flat) if rule.kind == FeeKind.FLAT else Decimal(cents(base * rule.basis_points / 10_000))
    if rule.minimum is not None:
        fee = max(fee, Decimal(rule.minimum))
    if rule.cap is not None:
        fee = min(fee, Decimal(rule.cap))
    return int(base), int(min(max(fee, 0), paid))


@settings(max_examples=400, deadline=None)
@given(rules(), bills())
def test_fee_is_exact_cents_within_bounds_and_never_more_than_paid(rule, bill):
    subtotal, total, paid = bill
    fee = compute_fee(rule, paid=paid, subtotal=subtotal, total=total)

    assert isinstance(fee.amount, int) and isinstance(fee.base_amount, int)
    assert (fee.base_amount, fee.amount) == reference_fee(rule, subtotal, total, paid)
    assert 0 <= fee.amount <= paid
    assert 0 <= fee.base_amount <= paid
    if rule.cap is not None:
        assert fee.amount <= rule.cap
    if rule.minimum is not None and (rule.cap is None or rule.minimum <= rule.cap):
        assert fee.amount >= min(rule.minimum, paid)


@settings(max_examples=300, deadline=None)
@given(fee=st.integers(0, 1_000_000), paid=st.integers(1, 10_000_000),
       refunds=st.lists(st.integers(1, 10_000_000), max_size=8))
def test_reversal_steps_sum_to_the_proportional_target_never_beyond_the_fee(fee, paid, refunds):
    fee = min(fee, paid)
    refunded, reversed_so_far = 0, 0
    for refund in refunds:
        refunded = min(paid, refunded + refund)
        step = reversal_step(fee, refunded=refunded, paid=paid, already_reversed=reversed_so_far)
        assert step >= 0
        reversed_so_far += step
        assert reversed_so_far == min(fee, cents(Decimal(fee) * refunded / paid))
        assert reversed_so_far <= fee
    # The same refund delivered again reverses nothing more.
    assert reversal_step(fee, refunded=refunded, paid=paid, already_reversed=reversed_so_far) == 0
    # A full refund brings the total to exactly the fee.
    reversed_so_far += reversal_step(fee, refunded=paid, paid=paid, already_reversed=reversed_so_far)
    assert reversed_so_far == fee


def test_examples_percent_of_subtotal_share_flat_minimum_and_cap():
    ten_percent = FeeRule(kind=FeeKind.PERCENT, basis_points=1000, base=FeeBase.SUBTOTAL)
    # $100.00 + $8.25 tax, paid in full: 10 % of the $100.00 subtotal.
    assert compute_fee(ten_percent, paid=10825, subtotal=10000, total=10825).amount == 1000
    # On the total instead: 10 % of $108.25 = $10.825 → $10.83 (half up).
    on_total = FeeRule(kind=FeeKind.PERCENT, basis_points=1000, base=FeeBase.TOTAL)
    assert compute_fee(on_total, paid=10825, subtotal=10000, total=10825).amount == 1083
    assert compute_fee(FeeRule(kind=FeeKind.FLAT, flat=2500), paid=10825, subtotal=10000, total=10825).amount == 2500
    # A flat fee never exceeds the payment.
    assert compute_fee(FeeRule(kind=FeeKind.FLAT, flat=2500), paid=1800, subtotal=1800, total=1800).amount == 1800
    with_minimum = FeeRule(kind=FeeKind.PERCENT, basis_points=500, minimum=1500)
    assert compute_fee(with_minimum, paid=10000, subtotal=10000, total=10000).amount == 1500
    with_cap = FeeRule(kind=FeeKind.PERCENT, basis_points=2000, cap=5000)
    assert compute_fee(with_cap, paid=100000, subtotal=100000, total=100000).amount == 5000
    assert reversal_target(1000, refunded=2500, paid=10000) == 250
    assert reversal_target(333, refunded=1, paid=2) == 167  # 166.5 rounds half up


def test_a_referrals_set_columns_override_the_partners():
    partner = SimpleNamespace(fee_kind=FeeKind.PERCENT, fee_basis_points=1000, fee_flat=None,
                              fee_base=FeeBase.SUBTOTAL, fee_minimum=500, fee_cap=10000)
    referral = SimpleNamespace(fee_kind=None, fee_basis_points=1500, fee_flat=None, fee_base=FeeBase.TOTAL,
                               fee_minimum=None, fee_cap=None)
    assert rule_for(partner) == FeeRule(kind=FeeKind.PERCENT, basis_points=1000, base=FeeBase.SUBTOTAL,
                                        minimum=500, cap=10000)
    assert rule_for(partner, referral) == FeeRule(kind=FeeKind.PERCENT, basis_points=1500, base=FeeBase.TOTAL,
                                                  minimum=500, cap=10000)
    flat = SimpleNamespace(fee_kind=FeeKind.FLAT, fee_basis_points=None, fee_flat=4000, fee_base=None,
                           fee_minimum=None, fee_cap=None)
    assert compute_fee(rule_for(partner, flat), paid=20000, subtotal=20000, total=20000).amount == 4000
