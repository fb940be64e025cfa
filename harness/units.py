"""The one table of units: how each metric unit is shown, the smallest move that can count, and the suffixes a
threshold may be written with. The report's tables, its comparisons, the hosts view and threshold parsing
all read it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Unit:
    """One metric unit: `value * scale` is shown with `decimals` and `suffix`; a change is shown in
    `delta_suffix` (percentage points for fractions). `noise_floor`: the smallest worsening that can count
    in a run-vs-run comparison; `host_floor`: the smallest difference between hosts worth flagging."""

    scale: float
    suffix: str
    decimals: int = 1
    delta_suffix: str = ""
    noise_floor: float = 0.0
    host_floor: float = 0.0


# Timings move by a millisecond between identical runs on a busy CPU (a tiny model's 0.03 ms inter-token gap
# is not 3x slower at 0.1 ms); hosts differ by more than that before it is worth a flag.
UNITS: Mapping[str, Unit] = {
    "s": Unit(1000.0, "ms", noise_floor=0.001, host_floor=0.005),
    "fraction": Unit(100.0, "%", delta_suffix="pt", host_floor=0.02),
    "bytes": Unit(1 / 2**20, "MiB", host_floor=16 * 2**20),
    "req/s": Unit(1.0, "req/s", decimals=2, host_floor=0.1),
    "tok/s": Unit(1.0, "tok/s", host_floor=1.0),
}

# Suffixes of an absolute threshold ("+50ms", "+32MiB") and the factor to the metric's own unit.
THRESHOLD_SUFFIXES: Mapping[str, float] = {
    "": 1.0,
    "s": 1.0,
    "ms": 1e-3,
    "b": 1.0,
    "kib": 1024.0,
    "mib": 1024.0**2,
    "gib": 1024.0**3,
}


def format_value(value: float | None, unit: str) -> str:
    """A metric value in a readable unit: seconds as ms, fractions as %, bytes as MiB ("-" for none)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    shown = UNITS.get(unit)
    if shown is None:
        return f"{value:g}"
    return f"{value * shown.scale:.{shown.decimals}f} {shown.suffix}"


def format_signed(value: float, unit: str) -> str:
    """A change with its sign: `+1.5 ms`, `-5.0 pt` (fractions move in percentage points)."""
    shown = UNITS.get(unit)
    if shown is not None and shown.delta_suffix:
        return f"{value * shown.scale:+.{shown.decimals}f} {shown.delta_suffix}"
    text = format_value(value, unit)
    return text if value < 0 else "+" + text


def noise_floor(unit: str) -> float:
    """The smallest worsening, in `unit`, that a comparison may call a regression."""
    shown = UNITS.get(unit)
    return shown.noise_floor if shown else 0.0


def host_floor(unit: str) -> float:
    """The smallest difference between hosts, in `unit`, worth flagging."""
    shown = UNITS.get(unit)
    return shown.host_floor if shown else 0.0
