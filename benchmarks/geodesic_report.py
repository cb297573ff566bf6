"""The geodesic benchmark's output: the per-decoder table, the summary, the JSON file."""

from __future__ import annotations

import json
import math
import os
from typing import Any

__all__ = ["GEORCE_S_PER_GEODESIC", "format_decoder", "format_summary", "write_json"]

GEORCE_S_PER_GEODESIC = 1.36  # published: d = 32 CelebA VAE, 100 nodes, CPU


def _f(x: Any, spec: str) -> str:
    """``format(x, spec)``, or a dash of the same width for a missing value."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        width = "".join(c for c in spec.split(".")[0] if c.isdigit())
        return "-".rjust(int(width or 1))
    return format(x, spec)


def format_decoder(name: str, rep: dict[str, Any]) -> str:
    """The per-method table of one decoder.

    Args:
        name: the decoder's name.
        rep: its report (:func:`benchmarks.geodesics.bench_decoder`).
    """
    lines = [
        f"\n== {name}: {rep['description']} (d = {rep['latent_dim']}, D' = {rep['embed_dim']}, "
        f"{rep['pairs']} pairs; lengths: {rep['measurement']}; best of {rep['best_of']})",
        f"{'method':<10}{'wall s':>8}{'geo/s':>8}{'conv':>6}{'revert':>7} | ratio to best:"
        f"{'med':>7}{'p95':>7}{'max':>7}{'>1.01':>6} | reported vs fine: {'med|e|':>9}"
        f"{'max|e|':>9}{'med e':>9}",
    ]
    for m, row in rep["methods"].items():
        label = m + ("*" if row.get("from_cache") else "")
        rb, er = row["ratio_to_best"], row["reported_error"]
        nan = float("nan")
        er = er or {"median_abs": nan, "max_abs": nan, "median_signed": nan}
        lines.append(
            f"{label:<10}{_f(row.get('wall_s'), '8.2f')}{_f(row.get('geodesics_per_s'), '8.1f')}"
            f"{_f(row.get('converged_fraction'), '6.2f')}{_f(row.get('reverted_fraction'), '7.2f')}"
            f" | {'':14}{rb['median']:7.4f}{rb['p95']:7.4f}{rb['max']:7.3f}{rb['n_gt_1.01']:6d}"
            f" | {'':17} {_f(er['median_abs'], '9.2e')}{_f(er['max_abs'], '9.2e')}"
            f"{_f(er['median_signed'], '+9.1e')}"
        )
    for m, row in rep["methods"].items():
        if "ours_over_this" in row and m != "line":
            o = row["ours_over_this"]
            lines.append(
                f"  ours / {m:<9}: median {o['median']:.4f}, p95 {o['p95']:.4f}, max "
                f"{o['max']:.3f}, {o['n_gt_1.01']} of {rep['pairs']} pairs > 1.01"
            )
    if any(row.get("from_cache") for row in rep["methods"].values()):
        lines.append("  * curves from --reference-cache (time: of the run that computed them); "
                     "measured in this run")  # fmt: skip
    if "speedup_vs_stochman" in rep:
        lines.append(f"  speed: ours {rep['speedup_vs_stochman']:.1f}x stochman's geodesics/s")
    if "ours_n100" in rep["methods"]:
        s = rep["methods"]["ours_n100"]["s_per_geodesic"]
        lines.append(f"  100 nodes: {s:.3f} s per geodesic (GEORCE published "
                     f"{GEORCE_S_PER_GEODESIC} s: {GEORCE_S_PER_GEODESIC / s:.1f}x)")  # fmt: skip
    w = rep["worst_pairs"][:3]
    lines.append("  worst pairs (ours / best): " + ", ".join(
        f"#{p['pair']} {p['ratio']:.3f} (best: {p['best_method']}, conv {p['converged']})"
        for p in w))  # fmt: skip
    lines.append("  targets: " + ", ".join(f"{k}: {v}" for k, v in rep["targets"].items()))
    return "\n".join(lines)


def format_summary(reports: dict[str, dict[str, Any]], threads: int) -> str:
    """One line per decoder: the figures issue #10 is judged on.

    Args:
        reports: ``{decoder name: report}`` (:func:`benchmarks.geodesics.bench_decoder`).
        threads: the torch threads of the run.
    """
    lines = [
        f"\nSummary ({threads} torch thread(s); ratio = ours / per-pair best of the methods each "
        "decoder lists under 'best of'; lengths measured finely, the same way for every method)",
        f"{'decoder':<12}{'d':>3}{'ours s':>8}{'geo/s':>8}{'x stoch':>8}{'med':>8}{'p95':>8}"
        f"{'max':>8}{'>1.01':>6}{'conv':>6}{'revert':>7}{'rep|e|max':>10}{'n100 s':>8}",
    ]
    for name, rep in reports.items():
        o = rep["methods"]["ours"]
        rb = o["ratio_to_best"]
        n100 = rep["methods"].get("ours_n100", {}).get("s_per_geodesic")
        lines.append(
            f"{name:<12}{rep['latent_dim']:>3}{o['wall_s']:8.2f}{o['geodesics_per_s']:8.1f}"
            f"{_f(rep.get('speedup_vs_stochman'), '8.1f')}{rb['median']:8.4f}{rb['p95']:8.4f}"
            f"{rb['max']:8.3f}{rb['n_gt_1.01']:6d}{o['converged_fraction']:6.2f}"
            f"{o['reverted_fraction']:7.2f}{o['reported_error']['max_abs']:10.2e}"
            f"{_f(n100, '8.3f')}"
        )
    failed = [f"{n}: {k}" for n, r in reports.items() for k, v in r["targets"].items() if not v]
    lines.append(f"targets missed ({len(failed)}): " + ("; ".join(failed) if failed else "none"))
    return "\n".join(lines)


def write_json(
    path: str, info: dict[str, Any], reports: dict[str, Any], matrix: dict[str, Any]
) -> None:
    """Write the run's figures: ``{"info": ..., "decoders": ..., "matrix": ...}``.

    Args:
        path: the JSON file (its folder is created).
        info: the run's settings and environment.
        reports: ``{decoder name: report}``.
        matrix: the graph distance matrix's figures (``{}`` when it did not run).
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"info": info, "decoders": reports, "matrix": matrix}, f, indent=1)
