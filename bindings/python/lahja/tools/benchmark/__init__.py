"""Seed benchmark of lahja for C (lahja 0.17's ``lahja.tools.benchmark`` layout)."""
from .stats import LocalStatistic  # noqa: F401
