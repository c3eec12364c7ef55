"""Amounts in integer minor units: rounding and tax, per line, half up, as Closeout's billing model requires."""

from decimal import ROUND_HALF_UP, Decimal


def round_half_up(value):
    """A Decimal amount of minor units, rounded half up to a whole unit."""
    return int(Decimal(value).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def decimal_text(value):
    """A Decimal as Stripe writes `unit_amount_decimal`: plain digits, no exponent."""
    return format(Decimal(value), "f")


def line_tax(amount, tax_rate):
    """The tax one tax rate puts on one line of `amount` minor units."""
    rate = Decimal(str(tax_rate["percentage"])) / 100
    if tax_rate["inclusive"]:
        # The tax already inside the amount: amount - amount / (1 + rate).
        return amount - round_half_up(Decimal(amount) / (1 + rate))
    return round_half_up(amount * rate)


def tax_entry(amount, tax_rate):
    """One element of a line's `taxes` (and, summed, of an invoice's `total_taxes`)."""
    tax = line_tax(amount, tax_rate)
    inclusive = tax_rate["inclusive"]
    return {
        "amount": tax,
        "tax_behavior": "inclusive" if inclusive else "exclusive",
        "tax_rate_details": {"tax_rate": tax_rate["id"]},
        "taxability_reason": "standard_rated",
        "taxable_amount": amount - tax if inclusive else amount,
        "type": "tax_rate_details",
    }


def format_amount(amount, currency):
    """An amount for people: `$12.50`, or `12.50 EUR`."""
    text = f"{Decimal(amount) / 100:,.2f}"
    return f"${text}" if currency == "usd" else f"{text} {currency.upper()}"
