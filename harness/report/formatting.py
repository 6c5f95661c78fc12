"""Number formatting shared by the report's tables and findings (three significant digits, SI, p)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MISSING = "—"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)


def sig3(value: Any) -> str:
    """Three significant digits, trailing zeros kept (0.500, 1.23, 123)."""
    if not _number(value):
        return MISSING
    if value == 0:
        return "0.00"
    if abs(float(f"{value:.3g}")) >= 1000:
        return si(value)
    return f"{value:#.3g}".rstrip(".")


_SI = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def si(value: Any) -> str:
    """SI suffix with three significant digits: 1234567 -> 1.23M, 4.2e15 -> 4.20P."""
    if not _number(value):
        return MISSING
    rounded = float(f"{value:.3g}")
    for scale, suffix in _SI:
        if abs(rounded) >= scale:
            return f"{rounded / scale:#.3g}".rstrip(".") + suffix
    return sig3(value)


def duration(seconds: Any) -> str:
    if not _number(seconds):
        return MISSING
    if seconds < 60:
        return f"{sig3(seconds)} s"
    if seconds < 3600:
        return f"{sig3(seconds / 60)} min"
    return f"{sig3(seconds / 3600)} h"


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def sd_text(sd: float, estimate: float) -> str:
    """' ± 0.02': a spread over seeds to the decimals of sig3(estimate), one significant digit where
    that would read 0, and ' ± 0' where the seeds agree to rounding noise (not ' ± 3e-17')."""
    places = _decimals(sig3(estimate))
    if sd <= 1e-9 * max(1.0, abs(estimate)):
        return " ± 0"
    return f" ± {sd:.{places}f}" if round(sd, places) > 0 else f" ± {sd:.1g}"


def metric_label(metric: str, higher_is_better: bool) -> str:
    """'acc ↑', 'bits_per_byte ↓': the metric and which way is better."""
    return f"{metric} {'↑' if higher_is_better else '↓'}"


def p_text(p: float | None) -> str:
    if p is None:
        return "not tested"
    return f"p = {p:.2g}"  # never 0: every test here reports p = (1 + b) / (1 + R) or an exact p


def signed(value: float) -> str:
    return ("+" if value >= 0 else "−") + sig3(abs(value))
