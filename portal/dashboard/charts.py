"""Server-rendered SVG charts: geometry computed here, drawn by templates; no JavaScript needed.

Charts are sized in a fixed viewBox and scale to the screen's width; every bar has a text label
or a <title>, and the numbers are also in a table beside the chart for screen readers.
"""
from dataclasses import dataclass

from portal.money import format_money

TREND_WIDTH, TREND_HEIGHT = 340, 180
TREND_TOP, TREND_BOTTOM, TREND_LEFT = 14, 26, 4
MAX_X_LABELS = 7


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class AxisLabel:
    x: float
    text: str


@dataclass(frozen=True)
class TrendChart:
    currency: str
    width: int
    height: int
    billed: list
    collected: list
    labels: list
    top_label: str
    baseline: float


def chart_currency(points):
    """The currency the chart draws: the one with the most billed; other currencies stay in the table."""
    totals = {}
    for point in points:
        for currency, amount in point.billed.items():
            totals[currency] = totals.get(currency, 0) + amount
        for currency, amount in point.collected.items():
            totals.setdefault(currency, 0)
    return max(totals, key=totals.get) if totals else "usd"


def label_for(day, unit):
    return f"{day:%b}" if unit == "month" else f"{day:%b} {day.day}"


def trend_chart(unit, points):
    """Pairs of bars (billed, collected) per bucket, scaled to the largest amount."""
    currency = chart_currency(points)
    largest = max([p.billed.get(currency, 0) for p in points] + [p.collected.get(currency, 0) for p in points] + [1])
    plot_height = TREND_HEIGHT - TREND_TOP - TREND_BOTTOM
    baseline = TREND_HEIGHT - TREND_BOTTOM
    slot = (TREND_WIDTH - TREND_LEFT) / max(len(points), 1)
    bar_width = max(slot * 0.4, 1)
    billed, collected, labels = [], [], []
    every = max(1, -(-len(points) // MAX_X_LABELS))
    for index, point in enumerate(points):
        left = TREND_LEFT + index * slot + slot * 0.1
        name = label_for(point.day, unit)
        for series, amount, offset, word in ((billed, point.billed.get(currency, 0), 0, "billed"),
                                             (collected, point.collected.get(currency, 0), bar_width, "collected")):
            height = plot_height * amount / largest
            series.append(Bar(round(left + offset, 2), round(baseline - height, 2), round(bar_width, 2),
                              round(height, 2), f"{name}: {format_money(amount, currency)} {word}"))
        if index % every == 0:
            labels.append(AxisLabel(round(left + bar_width, 2), name))
    return TrendChart(currency, TREND_WIDTH, TREND_HEIGHT, billed, collected, labels,
                      format_money(largest if largest > 1 else 0, currency), baseline)


@dataclass(frozen=True)
class AgingRow:
    label: str
    amount_text: str
    count: int
    width: float  # percent of the widest bar
    url: str


def aging_rows(figures, urls):
    """One horizontal bar per bucket (as wide as its share of the largest), with its amount as text."""
    def total(figure):
        return sum(figure.amounts.values())

    largest = max([total(figure) for figure in figures] + [1])
    return [AgingRow(figure.label, " + ".join(format_money(a, c) for c, a in sorted(figure.amounts.items())) or
                     format_money(0), figure.count, round(100 * total(figure) / largest, 1), urls[figure.key])
            for figure in figures]
