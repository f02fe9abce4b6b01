"""Compatibility names for the conversions registry (techniques/conversions.py)."""

from __future__ import annotations

from quantbench.techniques.conversions import CONVERSIONS, Scheme

SCHEMES: dict[str, Scheme] = {s.name: s for s in CONVERSIONS}
DEFAULT_SCHEMES: tuple[str, ...] = tuple(CONVERSIONS.defaults())


def get_scheme(name: str) -> Scheme:
    return CONVERSIONS.get(name)
