"""Money in integer minor units: line totals, tax and formatting.

Rule from shared/billing-states.md: each line total rounds half up to the cent,
tax is computed per line the same way, then both are summed.
"""
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

CURRENCY_EXPONENTS = {"jpy": 0, "krw": 0}  # minor-unit digits where not 2
MAX_QUANTITY = Decimal("100000")


class MoneyError(ValueError):
    """A quantity or amount that cannot be charged."""


def parse_quantity(value):
    """A positive decimal quantity with at most 3 decimal places."""
    try:
        quantity = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise MoneyError("quantity must be a number") from None
    if not quantity.is_finite() or quantity <= 0:
        raise MoneyError("quantity must be greater than zero")
    if quantity > MAX_QUANTITY:
        raise MoneyError("quantity is too large")
    if quantity != quantity.quantize(Decimal("0.001")):
        raise MoneyError("quantity allows at most 3 decimal places")
    return quantity.quantize(Decimal("0.001"))


def parse_amount(value):
    """A non-negative whole number of minor units (cents)."""
    if isinstance(value, bool):
        raise MoneyError("amount must be a whole number of cents")
    if isinstance(value, int):
        amount = value
    else:
        text = str(value).strip()
        if not text.lstrip("-").isdigit():
            raise MoneyError("amount must be a whole number of cents")
        amount = int(text)
    if amount < 0:
        raise MoneyError("amount must not be negative")
    if amount > 99_999_999:
        raise MoneyError("amount is too large")
    return amount


def round_half_up(value):
    """Round a Decimal to a whole number of minor units, halves away from zero."""
    return int(value.quantize(Decimal("1"), rounding=ROUND_HALF_UP))


def line_amount(quantity, unit_amount):
    """quantity × unit amount, rounded half up to the minor unit."""
    return round_half_up(Decimal(quantity) * unit_amount)


def line_tax(amount, tax_percent):
    """Tax on one line's amount, rounded half up to the minor unit."""
    return round_half_up(Decimal(amount) * Decimal(tax_percent) / 100)


@dataclass(frozen=True)
class Totals:
    subtotal: int
    tax: int
    currency: str

    @property
    def total(self):
        return self.subtotal + self.tax


def totals_for(lines, currency):
    """Sum already-rounded line amounts and taxes."""
    return Totals(sum(line.amount for line in lines), sum(line.tax_amount for line in lines), currency)


def spread(amount, weights):
    """Split `amount` minor units over `weights` in proportion: each part is its floor share, and the cents
    left over go to the largest remainders (ties to the earlier weight). The parts add up to `amount`."""
    total = sum(weights)
    if amount <= 0 or total <= 0:
        return [0] * len(weights)
    parts = [amount * weight // total for weight in weights]
    remainders = sorted(range(len(weights)), key=lambda i: (-(amount * weights[i] % total), i))
    for i in remainders[:amount - sum(parts)]:
        parts[i] += 1
    return parts


def format_money(amount, currency="usd"):
    """`$1,234.56`-style display of minor units; never used for arithmetic."""
    exponent = CURRENCY_EXPONENTS.get(currency.lower(), 2)
    major = Decimal(amount).scaleb(-exponent)
    symbol = {"usd": "$", "eur": "€", "gbp": "£", "cad": "CA$", "aud": "A$"}.get(currency.lower())
    text = f"{major:,.{exponent}f}"
    return f"{symbol}{text}" if symbol else f"{text} {currency.upper()}"


def parse_major_amount(text):
    """`85.00` typed by a person → 8500 minor units; refuses fractions of a cent."""
    try:
        value = Decimal(str(text).strip().replace(",", "").lstrip("$"))
    except InvalidOperation:
        raise MoneyError("enter an amount like 85.00") from None
    if not value.is_finite() or value < 0:
        raise MoneyError("amount must not be negative")
    cents = value * 100
    if cents != cents.to_integral_value():
        raise MoneyError("amount has fractions of a cent")
    return parse_amount(int(cents))
