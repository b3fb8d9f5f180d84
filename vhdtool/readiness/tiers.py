"""The managed-disk billing tier of a disk size (docs/azure-rules.md §1).

Azure bills a managed disk by the smallest tier its size fits in (sizes round up to whole GiB, then to
the tier). The tier is worked out here once, as a typed value: the ``billing-tier`` rule words it and
the manifest records it.
"""

from __future__ import annotations

from dataclasses import dataclass

GiB = 1 << 30
# (tier size in GiB, tier number), smallest first: Premium SSD P<n>, Standard SSD E<n>, Standard HDD S<n>.
TIERS: tuple[tuple[int, str], ...] = (
    (4, "1"),
    (8, "2"),
    (16, "3"),
    (32, "4"),
    (64, "6"),
    (128, "10"),
    (256, "15"),
    (512, "20"),
    (1024, "30"),
    (2048, "40"),
    (4096, "50"),
    (8192, "60"),
    (16384, "70"),
    (32767, "80"),
)
HDD_SMALLEST_GIB = 32  # Standard HDD starts at S4 = 32 GiB: smaller sizes are billed as S4
LARGEST_GIB = TIERS[-1][0]


@dataclass(frozen=True)
class BillingTier:
    """The tier a size is billed as; above the largest tier (32,767 GiB) the tier fields are ``None``."""

    size_gib: int  # the size rounded up to whole GiB
    tier_size_gib: int | None
    premium_ssd: str | None  # "P1" .. "P80"
    standard_ssd: str | None  # "E1" .. "E80"
    standard_hdd: str | None  # "S4" .. "S80"


def billing_tier(virtual_size: int) -> BillingTier:
    """The billing tier of a disk of ``virtual_size`` bytes."""
    size_gib = -(-virtual_size // GiB)
    for tier_gib, number in TIERS:
        if size_gib <= tier_gib:
            hdd = "S4" if tier_gib <= HDD_SMALLEST_GIB else f"S{number}"
            return BillingTier(size_gib, tier_gib, f"P{number}", f"E{number}", hdd)
    return BillingTier(size_gib, None, None, None, None)
