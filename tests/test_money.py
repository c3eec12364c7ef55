"""Money rounding: line totals round half up to the cent, then sum."""
from decimal import Decimal

import pytest

from portal.money import (MoneyError, format_money, line_amount, line_tax, parse_amount, parse_major_amount,
                          parse_quantity, spread)


@pytest.mark.parametrize(
    ("quantity", "unit_amount", "expected"),
    [
        ("3", 3333, 9999),  # 3 × $33.33
        ("2.5", 8500, 21250),  # 2.5 h × $85.00
        ("1.333", 1000, 1333),  # 1.333 × $10.00 = 13.33
        ("0.125", 1, 0),  # 0.125 cents rounds down
        ("0.5", 1, 1),  # half a cent rounds up
        ("1.5", 3, 5),  # 4.5 → 5
    ],
)
def test_line_amount_rounds_half_up_to_the_cent(quantity, unit_amount, expected):
    assert line_amount(parse_quantity(quantity), unit_amount) == expected


def test_tax_is_per_line_half_up():
    assert line_tax(1000, Decimal("8.25")) == 83  # 82.5 → 83
    assert line_tax(9999, "8.25") == 825  # 824.9175 → 825
    assert line_tax(1000, 0) == 0


@pytest.mark.parametrize("bad", ["-1", "0", "abc", "1.2345", "NaN", "Infinity", "1e9"])
def test_bad_quantities_are_refused(bad):
    with pytest.raises(MoneyError):
        parse_quantity(bad)


@pytest.mark.parametrize("bad", [-5, "-5", "1.5", True, "12a"])
def test_bad_amounts_are_refused(bad):
    with pytest.raises(MoneyError):
        parse_amount(bad)


def test_typed_dollars_become_cents_without_floats():
    assert parse_major_amount("85.00") == 8500
    assert parse_major_amount("$1,234.56") == 123456
    with pytest.raises(MoneyError):
        parse_major_amount("1.005")


def test_format_money():
    assert format_money(123456, "usd") == "$1,234.56"
    assert format_money(500, "jpy") == "500 JPY"


@pytest.mark.parametrize("amount, weights, expected", [
    (1000, [3000, 7000], [300, 700]),  # exact
    (100, [1, 1, 1], [34, 33, 33]),  # a cent left over goes to the earlier of equal remainders
    (1, [5000, 5000], [1, 0]),
    (999, [1, 2], [333, 666]),
    (1000, [2999, 7001], [300, 700]),  # 299.9 and 700.1: the larger remainder takes the cent
    (0, [10, 20], [0, 0]),
    (50, [0, 20], [0, 50]),  # nothing left to refund on the first: all on the second
])
def test_spread_splits_in_proportion_and_adds_up(amount, weights, expected):
    assert spread(amount, weights) == expected
    assert sum(spread(amount, weights)) == (amount if sum(weights) else 0)
