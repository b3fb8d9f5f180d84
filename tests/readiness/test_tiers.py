"""The billing tier of a size: one typed value, read by the ``billing-tier`` rule and the manifest."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vhdtool.readiness.tiers import TIERS, BillingTier, billing_tier

GiB = 1024 ** 3


@pytest.mark.parametrize("size, expected", [
    (1, BillingTier(1, 4, "P1", "E1", "S4")),
    (4 * GiB, BillingTier(4, 4, "P1", "E1", "S4")),
    (4 * GiB + 1, BillingTier(5, 8, "P2", "E2", "S4")),
    (30 * GiB, BillingTier(30, 32, "P4", "E4", "S4")),
    (33 * GiB, BillingTier(33, 64, "P6", "E6", "S6")),
    (127 * GiB, BillingTier(127, 128, "P10", "E10", "S10")),
    (32767 * GiB, BillingTier(32767, 32767, "P80", "E80", "S80")),
    (32768 * GiB, BillingTier(32768, None, None, None, None)),
])
def test_billing_tier(size: int, expected: BillingTier) -> None:
    assert billing_tier(size) == expected


@given(st.integers(1, 32767 * GiB))
def test_the_tier_is_the_smallest_that_holds_the_size(size: int) -> None:
    tier = billing_tier(size)
    assert tier.tier_size_gib is not None and tier.tier_size_gib * GiB >= size
    smaller = [gib for gib, _ in TIERS if gib < tier.tier_size_gib]
    assert not smaller or smaller[-1] * GiB < size


@given(st.integers(1, 32767 * GiB), st.integers(1, 32767 * GiB))
def test_billing_tier_is_monotonic(a: int, b: int) -> None:
    small, large = sorted((a, b))
    assert (billing_tier(small).tier_size_gib or 0) <= (billing_tier(large).tier_size_gib or 0)
