"""The geodesic benchmark proper: every method on one decoder, compared pair by pair on finely
measured lengths (:func:`bench_decoder`), and the run over the decoder family
(:func:`run_benchmark`)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import torch
from torch import Tensor

import geometry as G
import geometry.curves as geometry_curves
from benchmarks.common import log, source_state
from benchmarks.decoders import Decoder, build_decoder, encode_codes, load_model
from benchmarks.geodesic_matrix import bench_matrix
from benchmarks.geodesic_report import (
    GEORCE_S_PER_GEODESIC,
    format_decoder,
    format_summary,
    write_json,
)
from benchmarks.measure import fine_lengths
from benchmarks.methods import (
    STOCHMAN_HINT,
    run_graph_reference,
    run_ours,
    run_reference_adam,
    run_stochman,
)
from benchmarks.reference_cache import load_cache, save_cache

__all__ = [
    "RATIO_SLACK",
    "SPEED_TARGET",
    "bench_decoder",
    "error_stats",
    "ratio_stats",
    "resolve_ours_options",
    "run_benchmark",
]

RATIO_SLACK = 1.01  # "more than 1 % longer than the best"
SPEED_TARGET = {"vae": 10.0, "synthetic": 5.0}  # x stochman's geodesics/s (issue #10)


def ratio_stats(ratio: Tensor) -> dict[str, float]:
    """Median, 95th percentile, max and fraction above :data:`RATIO_SLACK` of per-pair ratios.

    Args:
        ratio: ``(B,)`` per-pair length ratios.

    Returns:
        ``median``, ``p95``, ``max``, ``frac_gt_1.01`` and ``n_gt_1.01``.
    """
    r = ratio.double()
    return {
        "median": float(r.median()),
        "p95": float(r.quantile(0.95)),
        "max": float(r.max()),
        "frac_gt_1.01": float((r > RATIO_SLACK).double().mean()),
        "n_gt_1.01": int((r > RATIO_SLACK).sum()),
    }


def error_stats(reported: Tensor, fine: Tensor) -> dict[str, float]:
    """Relative error of reported lengths against finely measured ones.

    Args:
        reported: ``(B,)`` lengths a method reported.
        fine: ``(B,)`` float64 finely measured lengths of the same curves.

    Returns:
        ``median_abs``, ``max_abs``, ``median_signed`` and ``min_signed`` of
        ``(reported - fine) / fine`` (negative: the reported length undercounts).
    """
    rel = (reported.double() - fine) / fine  # < 0: the reported length undercounts
    return {
        "median_abs": float(rel.abs().median()),
        "max_abs": float(rel.abs().max()),
        "median_signed": float(rel.median()),
        "min_signed": float(rel.min()),
    }


def _timed_median(reps: list[dict[str, Any]]) -> dict[str, Any]:
    """The first of repeated runs, with the median times and every wall time (``wall_s_all``)."""
    out = dict(reps[0])
    out["wall_s"] = statistics.median(r["wall_s"] for r in reps)
    out["cpu_s"] = statistics.median(r["cpu_s"] for r in reps)
    out["wall_s_all"] = [round(r["wall_s"], 4) for r in reps]
    return out


def resolve_ours_options(text: str | None, graph_points: Tensor) -> dict[str, Any]:
    """``--ours-options`` JSON -> keyword arguments (``"codes"`` stands for the graph points).

    Args:
        text: the option's JSON object, or ``None``.
        graph_points: ``(P, d)`` the graph points that ``"codes"`` stands for.

    Raises:
        SystemExit: the text is not a JSON object.
    """
    if not text:
        return {}
    try:
        opts = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"--ours-options must be a JSON object, got {text!r}: {e}") from e
    if not isinstance(opts, dict):
        raise SystemExit(f"--ours-options must be a JSON object, got {text!r}")
    for key, value in list(opts.items()):
        if value == "codes":
            opts[key] = graph_points
    return opts


def bench_decoder(dec: Decoder, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    """All methods on one decoder; the per-decoder report (JSON-ready).

    Draws ``--pairs`` (``--conv-pairs`` for a conv VAE) seeded pairs of distinct data-like
    points, runs the methods (ours and stochman timed ``--repeats`` times, interleaved), measures
    every curve finely and prints the decoder's table.

    Args:
        dec: the decoder and its data-like points.
        args: the benchmark's options.
        tag: ``"[k/n]"``, the decoder's place in the run (for progress lines).

    Returns:
        The report: the decoder's facts, ``methods`` (per method: ratio to best, reported
        error, times, flags), ``worst_pairs``, ``per_pair`` fine lengths, ``targets`` and,
        with stochman, ``speedup_vs_stochman``.
    """
    embed = dec.embed
    conv = dec.name.startswith("conv_")
    n_pairs = args.conv_pairs if conv else args.pairs
    adam_iterations = args.conv_adam_iterations if conv else args.adam_iterations
    g = torch.Generator().manual_seed(args.seed)
    n = dec.points.shape[0]
    i0 = torch.randint(0, n, (n_pairs,), generator=g)
    i1 = (i0 + torch.randint(1, n, (n_pairs,), generator=g)) % n  # i1 != i0
    z0, z1 = dec.points[i0].contiguous(), dec.points[i1].contiguous()
    gp = dec.points[torch.randperm(n, generator=g)[: args.graph_points]].contiguous()
    d = int(z0.shape[1])
    with torch.no_grad():
        dim_out = int(embed(z0[:1]).shape[1])
    ours_opts = resolve_ours_options(args.ours_options, gp)
    log(f"{tag} {dec.name}: {dec.description}; d = {d}, D' = {dim_out}, {n_pairs} pairs")
    key = json.dumps([
        dec.name, dec.checkpoint and os.path.getmtime(dec.checkpoint), n_pairs, args.seed,
        adam_iterations, args.adam_nodes, args.adam_lr, int(gp.shape[0]),
    ])  # fmt: skip
    cached = load_cache(args.reference_cache).get(key, {})

    # untimed warm-up of both timed methods on two pairs (first-call costs of forward-mode AD,
    # stochman's import and spline set-up are not part of either's speed)
    if not args.quick:
        run_ours(embed, z0[:2], z1[:2], **ours_opts)
        if not args.no_stochman:
            run_stochman(embed, z0[:2], z1[:2], 17)
    results: dict[str, dict[str, Any]] = {}
    # interleaved timed repeats of ours and stochman (median reported)
    reps: dict[str, list[dict[str, Any]]] = {"ours": [], "stochman": []}
    stochman_repeats = args.repeats if args.stochman_repeats is None else args.stochman_repeats
    for r in range(args.repeats):
        reps["ours"].append(run_ours(embed, z0, z1, **ours_opts))
        log(f"{tag} {dec.name}: ours repeat {r + 1}/{args.repeats}: "
            f"{reps['ours'][-1]['wall_s']:.2f} s")  # fmt: skip
        if not args.no_stochman and r < stochman_repeats:
            st = run_stochman(embed, z0, z1, args.spline_points)
            if st is None:
                print(STOCHMAN_HINT, flush=True)
                args.no_stochman = True
            else:
                reps["stochman"].append(st)
                log(f"{tag} {dec.name}: stochman repeat {r + 1}/{args.repeats}: "
                    f"{st['wall_s']:.2f} s")  # fmt: skip
    for name, rr in reps.items():
        if rr:
            results[name] = _timed_median(rr)
    if not args.no_adam:
        if "adam" in cached:
            results["adam"] = cached["adam"]
            log(f"{tag} {dec.name}: adam reference curves from {args.reference_cache}")
        else:
            results["adam"] = run_reference_adam(
                embed, z0, z1, args.adam_nodes, adam_iterations, args.adam_lr
            )
            log(f"{tag} {dec.name}: adam reference ({adam_iterations} steps, {args.adam_nodes} "
                f"nodes): {results['adam']['wall_s']:.1f} s")  # fmt: skip
    if not args.no_graph:
        if "graph" in cached and not args.refresh_graph:
            results["graph"] = cached["graph"]
            log(f"{tag} {dec.name}: graph reference curves from {args.reference_cache} "
                f"(computed {cached['graph'].get('computed', '?')})")  # fmt: skip
        else:
            if args.reference_cache and "adam" in results:  # keep it if the graph fails
                save_cache(args.reference_cache, key, {"adam": results["adam"]})
            graph = run_graph_reference(embed, z0, z1, gp, args.seed)
            if "failed" in graph:
                log(f"{tag} {dec.name}: graph reference failed: {graph['failed']}")
            else:
                results["graph"] = graph
                log(f"{tag} {dec.name}: graph reference ({graph['graph_points']} points, 64 "
                    f"nodes): {graph['wall_s']:.1f} s")  # fmt: skip
    if args.reference_cache:
        save_cache(args.reference_cache, key, {m: results[m] for m in ("adam", "graph")
                                               if m in results})  # fmt: skip
    if d == 32 and not args.no_n100:
        # GEORCE's node count, without node refinement (its figure is at 100 nodes)
        n100 = {**ours_opts, "num_nodes": 100, "max_num_nodes": 100}
        results["ours_n100"] = run_ours(embed, z0, z1, **n100)
        log(f"{tag} {dec.name}: ours with 100 nodes: {results['ours_n100']['wall_s']:.1f} s")
    line = G.straight_lines(z0, z1, 2)
    results["line"] = {"curves": line, "reported": None}  # context only: nothing reported

    how = ""
    t0 = time.perf_counter()
    for r in results.values():
        r["fine"], how = fine_lengths(embed, r["curves"], args)
    log(f"{tag} {dec.name}: fine measurement ({how}) of every curve: "
        f"{time.perf_counter() - t0:.1f} s")  # fmt: skip

    candidates = [m for m in ("ours", "stochman", "adam", "graph") if m in results]
    best = torch.stack([results[m]["fine"] for m in candidates]).min(dim=0).values  # (B,)
    ours_fine = results["ours"]["fine"]
    methods: dict[str, Any] = {}
    for name, r in results.items():
        row: dict[str, Any] = {
            "ratio_to_best": ratio_stats(r["fine"] / best),
            "reported_error": (
                error_stats(r["reported"], r["fine"]) if r["reported"] is not None else None
            ),
            "mean_fine_length": float(r["fine"].mean()),
            "median_fine_length": float(r["fine"].median()),
        }
        if "wall_s" in r:
            row.update(wall_s=r["wall_s"], cpu_s=r["cpu_s"],
                       geodesics_per_s=n_pairs / max(r["wall_s"], 1e-12),
                       s_per_geodesic=r["wall_s"] / n_pairs)  # fmt: skip
        if name in cached and results[name] is cached[name]:
            row["from_cache"] = True
        for key in ("wall_s_all", "iterations_mean", "iterations_max", "graph_points",
                    "auxiliary_points"):  # fmt: skip
            if key in r:
                row[key] = r[key]
        if "converged" in r:
            row["converged_fraction"] = float(r["converged"].float().mean())
        if "reverted" in r:
            row["reverted_fraction"] = float(r["reverted"].float().mean())
        if name != "ours":
            row["ours_over_this"] = ratio_stats(ours_fine / r["fine"])
        methods[name] = row
    ratio = ours_fine / best
    worst = ratio.argsort(descending=True)[: min(8, n_pairs)]
    rep: dict[str, Any] = {
        "kind": dec.kind, "description": dec.description, "checkpoint": dec.checkpoint,
        "latent_dim": d, "embed_dim": dim_out, "pairs": n_pairs, "num_points": n,
        "adam_iterations": adam_iterations, "stochman_repeats": stochman_repeats,
        "graph_points": int(gp.shape[0]), "measurement": how, "best_of": candidates,
        "ours_options": args.ours_options, "methods": methods,
        "worst_pairs": [
            {"pair": int(i), "i0": int(i0[i]), "i1": int(i1[i]), "ratio": float(ratio[i]),
             "ours": float(ours_fine[i]), "best": float(best[i]),
             "best_method": candidates[int(torch.stack(
                 [results[m]["fine"][i] for m in candidates]).argmin())],
             "converged": bool(results["ours"]["converged"][i])}
            for i in worst
        ],
        "per_pair": {
            name: [round(float(v), 6) for v in r["fine"]] for name, r in results.items()
        },
        "per_pair_ours_reported": [round(float(v), 6) for v in results["ours"]["reported"]],
        "per_pair_ours_converged": [bool(v) for v in results["ours"]["converged"]],
    }  # fmt: skip
    if "stochman" in methods:
        rep["speedup_vs_stochman"] = (
            methods["ours"]["geodesics_per_s"] / methods["stochman"]["geodesics_per_s"]
        )
    targets = {
        "ours_within_1%_of_best_on_every_pair": methods["ours"]["ratio_to_best"]["n_gt_1.01"] == 0,
        f"ours_reported_error<={args.report_rtol:g}": (
            methods["ours"]["reported_error"]["max_abs"] <= args.report_rtol
        ),
    }
    if "speedup_vs_stochman" in rep:
        goal = SPEED_TARGET[dec.kind]
        targets[f"speedup_vs_stochman>={goal:g}"] = rep["speedup_vs_stochman"] >= goal
    if "ours_n100" in methods:
        targets["n100_s_per_geodesic<1.36"] = (
            methods["ours_n100"]["s_per_geodesic"] < GEORCE_S_PER_GEODESIC
        )
    rep["targets"] = targets
    print(format_decoder(dec.name, rep), flush=True)
    return rep


def run_benchmark(args: argparse.Namespace, tmp: str) -> int:
    """The benchmark proper (``main`` after argument checks), with ``tmp`` as scratch folder.

    Prints the run's settings as one JSON line, each decoder's table, the graph distance matrix
    (on ``mlp_d2``, unless ``--no-matrix``) and the summary; writes ``--json`` after every
    decoder.

    Args:
        args: the checked options (:func:`benchmarks.geodesics_cli.parse_args`).
        tmp: scratch folder (models trained here, the matrix child's files).

    Returns:
        The exit status, 0.
    """
    info = {
        "torch": torch.__version__, "threads": args.threads, "pairs": args.pairs,
        "repeats": args.repeats, "seed": args.seed, "decoders": args.decoder_names,
        "adam_iterations": args.adam_iterations, "adam_nodes": args.adam_nodes,
        "graph_points": args.graph_points, "ours_options": args.ours_options,
        "conv_pairs": args.conv_pairs, "conv_adam_iterations": args.conv_adam_iterations,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "measure_curve_lengths": hasattr(geometry_curves, "measure_curve_lengths"),
        "source": source_state(),
    }  # fmt: skip
    print(json.dumps(info), flush=True)
    reports: dict[str, dict[str, Any]] = {}
    matrix: dict[str, Any] = {}
    names = args.decoder_names
    t_start = time.perf_counter()
    skipped: list[str] = []
    for k, name in enumerate(names):
        tag = f"[{k + 1}/{len(names)}]"
        if args.time_budget and time.perf_counter() - t_start > args.time_budget:
            skipped = names[k:]
            log(f"--time-budget {args.time_budget:g} s spent: not run: {', '.join(skipped)}")
            break
        if name == "mlp_d2" and args.checkpoint:
            model = load_model(args.checkpoint)
            dec = Decoder(name, "vae", model.embed, encode_codes(model), args.checkpoint,
                          "trained VAE, mlp, d = 2 (--checkpoint)")  # fmt: skip
        else:
            dec = build_decoder(name, args, tmp)
        reports[name] = bench_decoder(dec, args, tag)
        if name == "mlp_d2" and not args.no_matrix:
            matrix = bench_matrix(dec, args, tmp)
        if args.json:  # after every decoder, so a long run leaves partial results
            write_json(args.json, info, reports, matrix)
    print(format_summary(reports, args.threads), flush=True)
    if skipped:
        print(f"not run (--time-budget): {', '.join(skipped)}")
        info["not_run"] = skipped
    if args.json:
        write_json(args.json, info, reports, matrix)
        print("wrote", args.json)
    return 0
