"""The training benchmark's report: per stage and variant, the median per-pair ratio of the
Lightning epoch to the plain one with its confidence interval, and the two targets."""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks.training import EpochPairs

__all__ = ["median_confidence_interval", "print_report"]


def median_confidence_interval(values: list[float], z: float = 1.96) -> tuple[float, float]:
    """Distribution-free confidence interval of the median: the order statistics at
    n/2 -+ z sqrt(n)/2 (normal approximation of the binomial; 95 % for z = 1.96).

    Args:
        values: the sample (non-empty).
        z: the normal quantile of the interval's level.

    Returns:
        ``(low, high)``, two of the values.
    """
    ordered = sorted(values)
    n = len(ordered)
    half_width = z * math.sqrt(n) / 2
    low = max(0, math.floor(n / 2 - half_width))
    high = min(n - 1, math.ceil(n / 2 + half_width) - 1)
    return ordered[low], ordered[high]


def print_report(pairs: EpochPairs, repeats: int, epochs: int) -> None:
    """Print the table (one row per stage and variant) and the two targets.

    Args:
        pairs: ``{(stage, variant): [(plain s, Lightning s), ...]}``
            (:func:`benchmarks.training.run_paired_fits`).
        repeats: fits per stage and variant (``--repeats``).
        epochs: paired epochs per fit (``--epochs``).
    """
    print(
        f"{repeats} repeat(s) of {epochs} paired epochs per stage and variant "
        "(the first pair of each dropped); seconds per epoch are medians; ratio = median of "
        "the per-pair ratios, with its 95% confidence interval; sum ratio = summed times"
    )
    header = (
        "stage",
        "variant",
        "pairs",
        "plain s/epoch",
        "lightning s/epoch",
        "ratio",
        "95% CI",
        "sum ratio",
    )
    print(
        f"{header[0]:>5} {header[1]:>8} {header[2]:>5} {header[3]:>14} {header[4]:>18} "
        f"{header[5]:>6} {header[6]:>11} {header[7]:>10}"
    )
    for (stage, variant), rows in sorted(pairs.items()):
        plain_s = [p for p, _ in rows]
        light_s = [lt for _, lt in rows]
        ratios = [lt / p for p, lt in rows]
        low, high = median_confidence_interval(ratios)
        print(
            f"{stage:>5} {variant:>8} {len(rows):>5} {statistics.median(plain_s):>14.4f} "
            f"{statistics.median(light_s):>18.4f} {statistics.median(ratios):>6.2f} "
            f"{low:>5.2f}-{high:<5.2f} {sum(light_s) / sum(plain_s):>10.2f}"
        )
    medians = {key: statistics.median([lt / p for p, lt in rows]) for key, rows in pairs.items()}
    for stage in (1, 2):
        if (stage, "full") not in medians:
            continue
        print(
            f"stage {stage}: full job / plain loop: {medians[(stage, 'full')]:.3f} "
            "(target with --architecture conv: <= 1.10)"
        )
        if (stage, "quiet") in medians:
            features = medians[(stage, "full")] / medians[(stage, "quiet")]
            print(
                f"stage {stage}: job features over Lightning's bare loop (full / quiet): "
                f"{features:.3f} (target on the default job: <= 1.10)"
            )
