"""The paper's experiments, each writing a report folder (Markdown, JSON, PNG) and a W&B run.

``scripts/reproduce.py --experiment NAME`` runs them; from Python::

    from experiments import ReproduceSettings, get_experiment
    settings = ReproduceSettings(seeds=[0], stage1_epochs=60)
    results = get_experiment("table1").run(settings)

Built-in: ``table1`` (:mod:`experiments.clustering`), ``interpolation``
(:mod:`experiments.interpolation`), ``sampling`` (:mod:`experiments.sampling`), ``variance``
(:mod:`experiments.variance`), ``land`` (:mod:`experiments.land_report`: LAND mixture vs GMM,
hours at its default sizes, so ``all`` leaves it out: name it). Add more with
:func:`register_experiment`.
:func:`run_land_experiment` (:mod:`experiments.land`) is the LAND-vs-GMM comparison on one
trained model and its codes.
"""

from experiments.clustering import check_table1, f_measure, k_medoids, run_table1
from experiments.common import ReproduceSettings, TrainedModel, train_model
from experiments.interpolation import check_interpolation, path_smoothness, run_interpolation
from experiments.land import clustering_f_measure, run_land_experiment
from experiments.land_density import latent_density_maps
from experiments.land_report import check_land, run_land
from experiments.registry import (
    EXPERIMENTS,
    Experiment,
    get_experiment,
    register_experiment,
    selected_experiments,
)
from experiments.sampling import check_sampling, run_sampling
from experiments.variance import (
    check_variance,
    importance_log_marginal,
    prior_log_marginal,
    run_variance,
)

register_experiment(
    "table1", run_table1, check_table1, "clustering, Euclidean k-means vs geodesic k-medoids"
)
register_experiment(
    "variance", run_variance, check_variance, "MLP variance head vs RBF precision (App. C)"
)
register_experiment(
    "interpolation", run_interpolation, check_interpolation, "geodesic vs straight interpolants"
)
register_experiment(
    "sampling", run_sampling, check_sampling, "Riemannian vs Euclidean random walks"
)
register_experiment(
    "land",
    run_land,
    check_land,
    "LAND mixture vs Euclidean GMM (Sec. 5; hours: EM with geodesics; not part of 'all')",
    in_all=False,
)

__all__ = [
    "EXPERIMENTS",
    "Experiment",
    "ReproduceSettings",
    "TrainedModel",
    "check_interpolation",
    "check_land",
    "check_sampling",
    "check_table1",
    "check_variance",
    "clustering_f_measure",
    "f_measure",
    "importance_log_marginal",
    "path_smoothness",
    "prior_log_marginal",
    "get_experiment",
    "k_medoids",
    "latent_density_maps",
    "register_experiment",
    "selected_experiments",
    "run_interpolation",
    "run_land",
    "run_land_experiment",
    "run_sampling",
    "run_table1",
    "run_variance",
    "train_model",
]
