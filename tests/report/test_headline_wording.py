"""The optimize headline's energy and size wording."""

from __future__ import annotations

from wattwise.report.write import _size_text, _times_less


def test_a_variant_that_costs_more_energy_says_more_not_less():
    assert _times_less(2.5) == "2.50x less"
    assert _times_less(1 / 1.15) == "1.15x more"


def test_small_sizes_are_not_rounded_to_zero_megabytes():
    assert _size_text(22_700_000) == "22.70 MB"
    assert _size_text(20_480) == "20.5 kB"
