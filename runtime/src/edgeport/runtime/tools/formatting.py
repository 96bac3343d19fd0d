"""How reports write numbers and tables: every Markdown table and number of ``edgeport check``,
``bench``, ``bench cold-start``, ``loadtest`` and ``run`` goes through these. A missing value
(None, or a non-finite latency) is written "-"."""

from __future__ import annotations

import math
from collections.abc import Sequence


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table's lines: the header, its rule and one line per row."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def fmt_ms(value: float | None) -> str:
    """Milliseconds: three decimals below 1, two below 100, one above."""
    if value is None or not math.isfinite(value):
        return "-"
    if value < 1:
        return f"{value:.3f}"
    if value < 100:
        return f"{value:.2f}"
    return f"{value:.1f}"


def fmt_fixed(value: float | None, digits: int) -> str:
    """``digits`` decimals."""
    return "-" if value is None else f"{value:.{digits}f}"


def fmt_ratio(value: float | None) -> str:
    """A ratio as ``1.23x``."""
    return "-" if value is None else f"{value:.2f}x"


def fmt_pct(value: float | None, digits: int = 2) -> str:
    """A fraction as a percentage."""
    return "-" if value is None else f"{value * 100:.{digits}f}%"


def fmt_g(value: float | None, digits: int = 3) -> str:
    """``digits`` significant digits."""
    return "-" if value is None else f"{value:.{digits}g}"


def fmt_rate(value: float) -> str:
    """Samples per second: whole numbers from 100 up, three significant digits below."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
