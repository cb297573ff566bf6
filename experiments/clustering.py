"""Table 1: clustering latent codes under the Euclidean and the Riemannian distance.

Protocol (paper, Sec. 5 and Table 1): for each digit set, one VAE per training seed; its codes
(encoder means of every image of the set) are split into ``num_subsets`` stratified subsets;
on each subset the codes are clustered into as many clusters as there are digits, by k-means on
Euclidean distances and by k-medoids on geodesic distances (kNN-graph shortest paths under the
expected metric: one graph per model on all codes of the set, :func:`geometry.build_graph`, so
every code is a way point of the paths between the subset's codes; pairs in different graph
components get 10 times the largest finite distance, counted in the results); the F-measure of
each clustering against the labels is averaged over subsets and seeds.

The paper does not say how its Riemannian k-means forms centres; k-medoids (centres are codes,
the cost is the sum of geodesic distances to the nearest medoid) is the well-defined reading
that needs only the distance matrix. Also reported: k-means on a classical MDS embedding of the
geodesic distances (:func:`classical_mds`), a Riemannian k-means whose centres are discrete
geodesic Fréchet means over all graph nodes (:func:`frechet_kmeans`), and k-medoids on
Euclidean distances as a control for the algorithm.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.cluster import KMeans
from tqdm.auto import tqdm

from experiments.common import (
    ReproduceSettings,
    check_digits_available,
    encode_codes,
    mean_std,
    train_model,
)
from experiments.report import ExperimentReport
from geometry import build_graph, graph_distances
from pipeline import UserError

__all__ = [
    "PAPER_TABLE1",
    "TABLE1_DIGIT_SETS",
    "check_table1",
    "f_measure",
    "frechet_kmeans",
    "k_medoids",
    "medoid_cost",
    "run_table1",
    "stratified_subsets",
]

#: the paper's digit sets
TABLE1_DIGIT_SETS: tuple[tuple[int, ...], ...] = ((0, 1, 2), (3, 4, 7), (5, 6, 9))
#: the paper's Table 1: digits -> (Euclidean mean, std), (Riemannian mean, std), over 10 subsets
PAPER_TABLE1: dict[tuple[int, ...], tuple[tuple[float, float], tuple[float, float]]] = {
    (0, 1, 2): ((77.57, 0.87), (94.28, 1.14)),
    (3, 4, 7): ((77.80, 0.91), (89.54, 1.61)),
    (5, 6, 9): ((64.93, 0.96), (81.13, 2.52)),
}
#: coordinates of the classical MDS embedding of the geodesic distances (second Riemannian
#: clustering: k-means on them)
MDS_DIM = 10
#: fewest points per class in one subset
MIN_PER_CLASS_PER_SUBSET = 5


def f_measure(labels: Sequence[int] | np.ndarray, clusters: Sequence[int] | np.ndarray) -> float:
    """The clustering F-measure (Larsen and Aone, 1999), times 100.

    For class ``c`` (``n_c`` points) and cluster ``k`` (``n_k`` points) sharing ``n_ck`` points,
    precision ``P = n_ck / n_k``, recall ``R = n_ck / n_c`` and ``F(c, k) = 2 P R / (P + R)``
    (0 when ``n_ck = 0``). The F-measure is ``100 * sum_c (n_c / n) max_k F(c, k)``: each class
    is matched to its best cluster, weighted by its size. 100 means a perfect clustering (up to
    renaming the clusters).

    Args:
        labels: ``(n,)`` true classes.
        clusters: ``(n,)`` cluster assignments.

    Returns:
        The F-measure in [0, 100].
    """
    y = np.asarray(labels)
    c = np.asarray(clusters)
    if y.shape != c.shape or y.ndim != 1 or y.size == 0:
        raise ValueError(f"labels {y.shape} and clusters {c.shape} must be equal, non-empty (n,)")
    total = 0.0
    for cls in np.unique(y):
        in_c = y == cls
        best = 0.0
        for k in np.unique(c):
            in_k = c == k
            n_ck = float(np.sum(in_c & in_k))
            if n_ck == 0:
                continue
            p, r = n_ck / in_k.sum(), n_ck / in_c.sum()
            best = max(best, 2 * p * r / (p + r))
        total += in_c.sum() / y.size * best
    return 100.0 * total


def medoid_cost(D: np.ndarray, medoids: Sequence[int]) -> float:
    """Sum over points of the distance to the nearest medoid."""
    return float(D[:, list(medoids)].min(axis=1).sum())


def k_medoids(
    D: np.ndarray | torch.Tensor, k: int, restarts: int = 10, seed: int = 0, max_iter: int = 100
) -> tuple[np.ndarray, np.ndarray, float]:
    """k-medoids (PAM swap search) on a distance matrix, best of ``restarts`` seeded starts.

    Each start draws medoids by k-means++ seeding on ``D``, then repeats the best single swap
    (medoid out, non-medoid in) that lowers the cost until none does (a local optimum of PAM).

    Args:
        D: ``(n, n)`` symmetric distances.
        k: number of clusters, ``1 <= k <= n``.
        restarts: seeded starts (the lowest cost is kept).
        seed: seed of the starts.
        max_iter: most swaps per start.

    Returns:
        ``assignments (n,)`` (index of the nearest medoid, 0..k-1), ``medoids (k,)`` and the
        cost.
    """
    D = np.asarray(D.detach().cpu() if isinstance(D, torch.Tensor) else D, dtype=float)
    n = D.shape[0]
    if D.shape != (n, n) or not np.all(np.isfinite(D)):
        raise ValueError(f"D must be a finite square (n, n) matrix, got shape {D.shape}")
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be in 1..{n} (the number of points)")
    if restarts < 1:
        raise ValueError(f"restarts={restarts} must be >= 1")
    rng = np.random.default_rng(seed)
    best: tuple[float, np.ndarray] | None = None
    for _ in range(restarts):
        med = [int(rng.integers(n))]
        for _ in range(1, k):
            d2 = D[:, med].min(axis=1) ** 2
            p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
            med.append(int(rng.choice(n, p=p)))
        med_arr = np.array(med)
        cost = medoid_cost(D, med_arr)
        for _ in range(max_iter):
            # cost of every swap (medoid slot i <- point j), vectorized over j per slot
            best_swap = (cost, -1, -1)
            for i in range(k):
                others = np.delete(med_arr, i)
                rest = D[:, others].min(axis=1) if others.size else np.full(n, np.inf)  # (n,)
                costs = np.minimum(rest[:, None], D).sum(axis=0)  # (n,) candidate j
                costs[med_arr] = np.inf
                j = int(np.argmin(costs))
                if costs[j] < best_swap[0] - 1e-12 * max(1.0, abs(cost)):
                    best_swap = (float(costs[j]), i, j)
            if best_swap[1] < 0:
                break
            cost, i, j = best_swap
            med_arr[i] = j
        if best is None or cost < best[0]:
            best = (cost, med_arr.copy())
    assert best is not None
    cost, med_arr = best
    return D[:, med_arr].argmin(axis=1), med_arr, cost


def frechet_kmeans(
    D: np.ndarray, k: int, restarts: int = 10, seed: int = 0, max_iter: int = 100
) -> tuple[np.ndarray, np.ndarray, float]:
    """Riemannian k-means with discrete Fréchet-mean centres (Lloyd iterations).

    ``D (m, n)`` holds the geodesic distances from the ``m`` points to ``n`` candidate centres
    (e.g. every node of the graph, the points among them). Each iteration assigns every point
    to its nearest centre and moves each centre to the candidate minimising the sum of squared
    distances to its points (the Fréchet mean restricted to the candidates); k-means++ seeding,
    the lowest cost of ``restarts`` starts is kept.

    Returns:
        ``assignments (m,)``, ``centres (k,)`` (candidate indices) and the cost (sum of squared
        distances to the nearest centre).
    """
    D = np.asarray(D, dtype=float)
    m, n = D.shape
    if not np.all(np.isfinite(D)):
        raise ValueError("D must be finite")
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be in 1..{n} (the number of candidate centres)")
    D2 = D**2
    rng = np.random.default_rng(seed)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for _ in range(restarts):
        centres = [int(rng.integers(n))]
        for _ in range(1, k):
            w = D2[:, centres].min(axis=1)  # (m,) squared distance to the nearest centre
            p = w / w.sum() if w.sum() > 0 else np.full(m, 1.0 / m)
            centres.append(int(np.argmin(D2[int(rng.choice(m, p=p))])))  # its nearest candidate
        c = np.array(centres)
        assign = D2[:, c].argmin(axis=1)
        for _ in range(max_iter):
            new = c.copy()
            for j in range(k):
                members = assign == j
                if members.any():
                    new[j] = int(np.argmin(D2[members].sum(axis=0)))
            new_assign = D2[:, new].argmin(axis=1)
            if np.array_equal(new, c) and np.array_equal(new_assign, assign):
                break
            c, assign = new, new_assign
        cost = float(D2[np.arange(m), c[assign]].sum())
        if best is None or cost < best[0]:
            best = (cost, assign.copy(), c.copy())
    assert best is not None
    return best[1], best[2], best[0]


def classical_mds(D: np.ndarray, dim: int) -> np.ndarray:
    """Classical (Torgerson) multidimensional scaling of a distance matrix.

    The points whose Euclidean distances best match ``D`` in the sense of the double-centred
    Gram matrix ``B = -J D^2 J / 2`` (``J`` the centring matrix): the top ``dim`` eigenvectors
    scaled by the square roots of their (non-negative parts of the) eigenvalues. For Euclidean
    ``D`` of points in ``R^dim`` this recovers the points up to a rigid motion.

    Returns:
        ``(n, dim)`` coordinates.
    """
    n = D.shape[0]
    J = np.eye(n) - 1.0 / n
    B = -0.5 * J @ (D**2) @ J
    w, V = np.linalg.eigh(0.5 * (B + B.T))
    top = np.argsort(w)[::-1][:dim]
    return V[:, top] * np.sqrt(np.clip(w[top], 0, None))


def stratified_subsets(labels: np.ndarray, num_subsets: int, seed: int) -> list[np.ndarray]:
    """Split indices into ``num_subsets`` disjoint subsets with (almost) equal class shares.

    Each class is permuted (seeded) and dealt out in ``num_subsets`` nearly equal parts.

    Returns:
        ``num_subsets`` sorted index arrays covering every index once.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(num_subsets)]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        for s, chunk in enumerate(np.array_split(idx, num_subsets)):
            parts[s].append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def check_table1(
    settings: ReproduceSettings,
    digit_sets: Sequence[Sequence[int]] = TABLE1_DIGIT_SETS,
    num_subsets: int = 10,
    max_per_class: int | None = 1000,
) -> None:
    """Up-front checks (no training): digits present, enough points per class per subset.

    Raises:
        UserError: naming the bad value and what is accepted.
    """
    if num_subsets < 1:
        raise UserError(f"num_subsets={num_subsets} must be >= 1")
    for digits in digit_sets:
        if len(set(digits)) < 2:
            raise UserError(f"table1: digit set {list(digits)} needs at least 2 distinct digits")
        counts = check_digits_available(settings, digits, 1, "table1")
        used = {d: min(c, max_per_class or c) for d, c in counts.items()}
        need = MIN_PER_CLASS_PER_SUBSET * num_subsets
        short = {d: c for d, c in used.items() if c < need}
        if short:
            raise UserError(
                f"table1: num_subsets={num_subsets} leaves fewer than "
                f"{MIN_PER_CLASS_PER_SUBSET} points per digit in a subset for digits "
                f"{sorted(short.items())} (digit: images); use num_subsets <= "
                f"{min(short.values()) // MIN_PER_CLASS_PER_SUBSET} or more data"
            )


def _cluster_model(
    embed: Any,
    codes: torch.Tensor,
    labels: np.ndarray,
    subsets: list[np.ndarray],
    k: int,
    seed: int,
    graph_k: int,
    restarts: int,
    progress: bool,
    desc: str,
) -> dict[str, Any]:
    euc, riem, stretch, riem_mds, euc_med, disconnected = [], [], [], [], [], []
    riem_frechet = []
    last: dict[str, Any] = {}
    with torch.no_grad():
        graph = build_graph(embed, codes, k=graph_k, progress=progress)
    for idx in tqdm(subsets, desc=desc, disable=not progress, leave=False):
        z = codes[idx]
        y = labels[idx]
        km = KMeans(n_clusters=k, n_init=restarts, random_state=seed).fit(z.numpy())
        D = graph_distances(graph, idx, idx, on_disconnected="inf")  # (m, m)
        D = 0.5 * (D + D.T)
        unreachable = ~np.isfinite(D)
        if unreachable.any():  # graph components: farther apart than any connected pair
            D[unreachable] = 10 * D[~unreachable].max()
        disconnected.append(int(unreachable.sum() // 2))
        Dn = graph_distances(graph, idx, None, on_disconnected="inf")  # (m, n): to every node
        Dn[~np.isfinite(Dn)] = 10 * Dn[np.isfinite(Dn)].max()
        riem_frechet.append(f_measure(y, frechet_kmeans(Dn, k, restarts=restarts, seed=seed)[0]))
        assign, _, _ = k_medoids(D, k, restarts=restarts, seed=seed)
        euc.append(f_measure(y, km.labels_))
        riem.append(f_measure(y, assign))
        X = classical_mds(D, MDS_DIM)
        mds = KMeans(n_clusters=k, n_init=restarts, random_state=seed).fit(X)
        riem_mds.append(f_measure(y, mds.labels_))
        E = torch.cdist(z.double(), z.double()).numpy()
        euc_med.append(f_measure(y, k_medoids(E, k, restarts=restarts, seed=seed)[0]))
        # geodesic / Euclidean distance ratio between classes over within classes
        iu = np.triu_indices(len(idx), 1)
        ratio = D[iu] / np.maximum(E[iu], 1e-12)
        same = (y[:, None] == y[None, :])[iu]
        stretch.append(float(np.median(ratio[~same]) / np.median(ratio[same])))
        last = {"idx": idx, "euclidean": km.labels_, "riemannian": assign}
    return {
        "euclidean": euc,
        "riemannian": riem,
        "riemannian_mds_kmeans": riem_mds,
        "riemannian_frechet_kmeans": riem_frechet,
        "euclidean_kmedoids": euc_med,
        "stretch": stretch,
        "disconnected_pairs": disconnected,
        "last": last,
    }


def majority_labels(labels: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Each point's cluster renamed to the most frequent class in it (for colouring)."""
    out = np.empty_like(labels)
    for k in np.unique(clusters):
        members = clusters == k
        values, counts = np.unique(labels[members], return_counts=True)
        out[members] = values[np.argmax(counts)]
    return out


def _latent_figure(path: str, panels: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 3, figsize=(11, 3.5 * len(panels)), squeeze=False)
    for row, p in zip(axes, panels):
        z = p["codes"]
        for ax, (title, col) in zip(
            row,
            (
                ("classes", p["labels"]),
                (
                    f"k-means (Euclidean) F={p['euc']:.1f}",
                    majority_labels(p["labels"], p["euclidean"]),
                ),
                (
                    f"k-medoids (geodesic) F={p['riem']:.1f}",
                    majority_labels(p["labels"], p["riemannian"]),
                ),
            ),
        ):
            ax.scatter(z[:, 0], z[:, 1], c=col, s=6, cmap="tab10", vmin=0, vmax=9)
            ax.set_title(f"{p['title']}: {title}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_table1(
    settings: ReproduceSettings,
    digit_sets: Sequence[Sequence[int]] = TABLE1_DIGIT_SETS,
    num_subsets: int = 10,
    max_per_class: int | None = 1000,
    graph_k: int = 10,
    restarts: int = 10,
    model: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run Table 1 and write its report (``<out_dir>/table1``).

    Args:
        settings: the shared settings (seeds, epochs, data...).
        digit_sets: digit sets (default: the paper's three).
        num_subsets: stratified subsets per set (paper: 10).
        max_per_class: images per digit (paper: 1000; the embedded data has 500).
        graph_k: neighbours of the kNN graph on all codes of the set (geodesic distances).
        restarts: k-means and k-medoids restarts.
        model: ``TwoStageVAE`` arguments over the paper's MNIST defaults (the same for every
            digit set), e.g. ``{"bandwidth_scale": 1.0}``.

    Returns:
        The results (also in ``results.json``).
    """
    digit_sets = [tuple(int(d) for d in s) for s in digit_sets]
    check_table1(settings, digit_sets, num_subsets, max_per_class)
    report = ExperimentReport("table1", settings)
    per_set: dict[str, Any] = {}
    panels = []
    models = [(s, seed) for s in digit_sets for seed in settings.seeds]
    t_train = t_cluster = 0.0
    bar = tqdm(models, desc="table1 models", disable=not settings.progress)
    for digits, seed in bar:
        tag = "".join(map(str, digits))
        bar.set_postfix_str(f"digits {tag} seed {seed}")
        t0 = time.perf_counter()
        tm = train_model(
            settings,
            "table1",
            digits,
            seed,
            model=model,
            data={"max_per_class": max_per_class, "val_fraction": 0.1, "test_fraction": 0.0},
        )
        t_train += time.perf_counter() - t0
        t0 = time.perf_counter()
        dm = tm.datamodule
        codes, labels, _ = encode_codes(tm.model, [dm.train_dataset, dm.val_dataset])
        y = labels.numpy()
        subsets = stratified_subsets(y, num_subsets, seed)
        res = _cluster_model(
            tm.model.embed,
            codes,
            y,
            subsets,
            len(digits),
            seed,
            graph_k,
            restarts,
            settings.progress,
            f"subsets {tag}/s{seed}",
        )
        t_cluster += time.perf_counter() - t0
        entry = per_set.setdefault(tag, {"digits": list(digits), "seeds": {}})
        entry["seeds"][str(seed)] = {
            "euclidean": res["euclidean"],
            "riemannian": res["riemannian"],
            "riemannian_mds_kmeans": res["riemannian_mds_kmeans"],
            "riemannian_frechet_kmeans": res["riemannian_frechet_kmeans"],
            "euclidean_kmedoids": res["euclidean_kmedoids"],
            "stretch": res["stretch"],
            "disconnected_pairs": res["disconnected_pairs"],
            "n_points": int(len(y)),
            "subset_size": int(len(subsets[0])),
            "run_dir": tm.run_dir,
            "train_seconds": tm.seconds,
            "val_elbo_stage2": tm.summary["stage2"]["metrics"].get("val/elbo"),
        }
        if seed == settings.seeds[0]:
            last = res["last"]
            panels.append(
                {
                    "title": f"{{{','.join(map(str, digits))}}}",
                    "codes": codes[last["idx"]].numpy(),
                    "labels": y[last["idx"]],
                    "euclidean": last["euclidean"],
                    "riemannian": last["riemannian"],
                    "euc": res["euclidean"][-1],
                    "riem": res["riemannian"][-1],
                }
            )
    rows, summary = [], {}
    for tag, entry in per_set.items():
        seeds = entry["seeds"]
        stats = {}
        for metric in (
            "euclidean",
            "riemannian",
            "riemannian_mds_kmeans",
            "riemannian_frechet_kmeans",
            "euclidean_kmedoids",
        ):
            all_vals = [v for s in seeds.values() for v in s[metric]]
            seed_means = [float(np.mean(s[metric])) for s in seeds.values()]
            subset_sd = float(np.mean([np.std(s[metric], ddof=1) for s in seeds.values()]))
            stats[metric] = {
                "mean": float(np.mean(all_vals)),
                "std_over_seeds": mean_std(seed_means)[1],
                "std_over_subsets": subset_sd,
                "seed_means": seed_means,
            }
        gains = [float(np.mean(s["riemannian"]) - np.mean(s["euclidean"])) for s in seeds.values()]
        stats["gain"] = {"mean": mean_std(gains)[0], "std_over_seeds": mean_std(gains)[1]}
        stats["stretch_median"] = float(
            np.median([v for s in seeds.values() for v in s["stretch"]])
        )
        entry["stats"] = stats
        paper = PAPER_TABLE1.get(tuple(entry["digits"]))
        e, r = stats["euclidean"], stats["riemannian"]
        rows.append(
            [
                "{" + ",".join(map(str, entry["digits"])) + "}",
                f"{e['mean']:.2f} ({e['std_over_subsets']:.2f} / {e['std_over_seeds']:.2f})",
                f"{r['mean']:.2f} ({r['std_over_subsets']:.2f} / {r['std_over_seeds']:.2f})",
                f"{stats['gain']['mean']:+.2f} ({stats['gain']['std_over_seeds']:.2f})",
                " / ".join(f"{m:.1f}" for m in e["seed_means"]),
                " / ".join(f"{m:.1f}" for m in r["seed_means"]),
                f"{stats['riemannian_mds_kmeans']['mean']:.2f}",
                f"{stats['riemannian_frechet_kmeans']['mean']:.2f}",
                f"{stats['euclidean_kmedoids']['mean']:.2f}",
                f"{stats['stretch_median']:.3f}",
                f"{paper[0][0]:.2f} ({paper[0][1]:.2f})" if paper else "-",
                f"{paper[1][0]:.2f} ({paper[1][1]:.2f})" if paper else "-",
            ]
        )
        summary[f"table1/{tag}/euclidean"] = e["mean"]
        summary[f"table1/{tag}/riemannian"] = r["mean"]
        summary[f"table1/{tag}/gain"] = stats["gain"]["mean"]
    first = next(iter(per_set.values()))["seeds"]
    n_sub = next(iter(first.values()))["subset_size"]
    report.add_text(
        f"F-measure x100 (Larsen-Aone), mean over {num_subsets} stratified subsets of about "
        f"{n_sub} codes and {len(settings.seeds)} training seeds {list(settings.seeds)}; in "
        "brackets the std over subsets (mean of the per-seed stds) / the std of the seed means. "
        "Euclidean: k-means on the codes; Riemannian: k-medoids on kNN-graph geodesic "
        f"distances (one graph on all codes of the set, k={graph_k}). Stretch: median "
        "geodesic/Euclidean ratio between classes over within classes. "
        f"Riem MDS+k-means: k-means on a {MDS_DIM}-d classical MDS of the geodesic distances "
        "(second Riemannian option); Riem Fréchet k-means: Lloyd k-means with geodesic "
        "Fréchet-mean centres among all graph nodes (third option); Euc k-medoids: k-medoids "
        "on Euclidean distances (separates the algorithm's effect from the metric's)."
        f" Data: {settings.record()['dataset_resolved']}, "
        f"max {max_per_class} per digit; {settings.stage1_epochs}+{settings.stage2_epochs} "
        f"epochs; model settings {model or {}} over the paper's defaults. Clusters in the "
        "figure are coloured by their majority class."
    )
    report.add_table(
        "table1",
        [
            "digits",
            "Euclidean",
            "Riemannian",
            "gain (std seeds)",
            "Euc per seed",
            "Riem per seed",
            "Riem MDS+k-means",
            "Riem Fréchet k-means",
            "Euc k-medoids",
            "stretch",
            "paper Euc",
            "paper Riem",
        ],
        rows,
    )
    _latent_figure(report.figure_path("latent_clusters"), panels)
    timing = {"train_seconds": t_train, "cluster_seconds": t_cluster}
    report.add_text(
        f"Time: training {t_train:.0f} s (reused runs are fast), clustering {t_cluster:.0f} s."
    )
    return report.write({"digit_sets": per_set, "timing": timing}, summary)
