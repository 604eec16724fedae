"""Statistics over seeds, standard library only: mean and std, Student's t quantile, paired differences."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass


def sample_mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation; std None for one value, both None for none."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


# t_{0.975, df} for df = 1..30, printed from scipy.stats.t.ppf to 10 significant digits. A table,
# not scipy, so that building a table needs nothing beyond the standard library; beyond df 30 the
# Cornish-Fisher expansion about the normal quantile is within 3e-8 of the exact value.
T_975 = (
    12.70620474, 4.30265273, 3.182446305, 2.776445105, 2.570581836,
    2.446911851, 2.364624252, 2.306004135, 2.262157163, 2.228138852,
    2.20098516, 2.17881283, 2.160368656, 2.144786688, 2.131449546,
    2.119905299, 2.109815578, 2.10092204, 2.093024054, 2.085963447,
    2.079613845, 2.073873068, 2.06865761, 2.063898562, 2.059538553,
    2.055529439, 2.051830516, 2.048407142, 2.045229642, 2.042272456,
)
Z_975 = 1.959963984540054  # the standard normal's 0.975 quantile


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (two-sided 95% intervals)."""
    if df < 1:
        raise ValueError(f"t quantile needs at least 1 degree of freedom, got {df}")
    if df <= len(T_975):
        return T_975[df - 1]
    z = Z_975
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
            + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * df**4))


@dataclass(frozen=True)
class PairedDifference:
    """Mean of per-seed differences with its 95% t interval; mean and bounds None under 2 pairs."""

    pairs: int
    mean: float | None = None
    low: float | None = None
    high: float | None = None

    @property
    def excludes_zero(self) -> bool:
        """The interval lies wholly above 0 (a gain) or wholly below it (a loss)."""
        return self.low is not None and (self.low > 0 or self.high < 0)


def paired_difference(treated: Mapping[int, float], reference: Mapping[int, float]) -> PairedDifference:
    """``treated[s] - reference[s]`` over the seeds ``s`` both have: mean ± t_{0.975, n-1} sd / sqrt(n).

    A seed draws the same data order and augmentations for both runs; pairing by seed removes
    that shared part of the spread, which an unpaired comparison of the two means counts as
    noise. A seed only one side ran pairs with nothing and is left out. One pair has no
    spread, so no interval.
    """
    differences = [treated[seed] - reference[seed] for seed in sorted(treated.keys() & reference.keys())]
    if len(differences) < 2:
        return PairedDifference(len(differences))
    mean = statistics.fmean(differences)
    half_width = t_quantile_975(len(differences) - 1) * statistics.stdev(differences) / math.sqrt(len(differences))
    return PairedDifference(len(differences), mean, mean - half_width, mean + half_width)
