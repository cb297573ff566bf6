"""Riemannian geometry of generators: metrics, curves, geodesics, graphs, distances, walks,
LAND mixtures.

Pure torch (plus numpy/scipy/tqdm). Every function takes the generator as a callable
``embed(z: (B, d)) -> (B, D')`` whose Euclidean pull-back is the metric; for the project's VAE
that is ``TwoStageVAE.embed`` (the concatenation ``[mu(z), sigma(z)]``, giving the paper's
expected metric ``M = J_mu^T J_mu + J_sigma^T J_sigma``). Tensors are batch first; outputs are
on the device and dtype of the inputs.
"""

from geometry.adaptive_exp import GeodesicShots, shoot_geodesics
from geometry.brownian import brownian_drift, metric_and_derivatives
from geometry.curves import (
    CurveLengths,
    chord_length,
    constant_speed_curves,
    curve_energy,
    curve_length,
    measure_curve_lengths,
    resample_curves,
    segment_lengths,
    straight_lines,
    subdivide_curves,
)
from geometry.distance_blocks import (
    DistanceMatrixFileError,
    IncompleteDistanceMatrixError,
    distance_matrix_status,
    geodesic_distances,
    open_distance_matrix,
    write_distance_matrix,
)
from geometry.distances import (
    auxiliary_points,
    build_graph,
    geodesic_distance_matrix,
    refined_pair_distances,
)
from geometry.euclidean_mixture import EuclideanGMM
from geometry.geodesics import GeodesicResult, connecting_geodesics
from geometry.graph import (
    DisconnectedGraphError,
    LatentGraph,
    check_connected,
    check_pairs_connected,
    graph_distances,
    knn_graph,
    node_indices,
    shortest_path_curves,
)
from geometry.land import LANDMixture
from geometry.land_checks import ComponentCollapseError
from geometry.land_normaliser import NormaliserEstimate
from geometry.maps import exp_map, geodesic_acceleration, initial_velocities, log_map
from geometry.metric import (
    embed_and_jacobian,
    embed_and_tangents,
    jacobian,
    log_magnification_factor,
    magnification_factor,
    metric_tensor,
)
from geometry.sampling import random_walk
from geometry.squared_distance import squared_geodesic_distance

__all__ = [
    "ComponentCollapseError",
    "EuclideanGMM",
    "LANDMixture",
    "NormaliserEstimate",
    "CurveLengths",
    "DistanceMatrixFileError",
    "IncompleteDistanceMatrixError",
    "distance_matrix_status",
    "geodesic_distances",
    "open_distance_matrix",
    "squared_geodesic_distance",
    "write_distance_matrix",
    "DisconnectedGraphError",
    "GeodesicResult",
    "LatentGraph",
    "auxiliary_points",
    "brownian_drift",
    "build_graph",
    "check_connected",
    "check_pairs_connected",
    "chord_length",
    "connecting_geodesics",
    "constant_speed_curves",
    "curve_energy",
    "curve_length",
    "embed_and_jacobian",
    "embed_and_tangents",
    "exp_map",
    "geodesic_acceleration",
    "geodesic_distance_matrix",
    "graph_distances",
    "jacobian",
    "knn_graph",
    "node_indices",
    "log_magnification_factor",
    "initial_velocities",
    "log_map",
    "shoot_geodesics",
    "GeodesicShots",
    "magnification_factor",
    "measure_curve_lengths",
    "metric_and_derivatives",
    "metric_tensor",
    "random_walk",
    "refined_pair_distances",
    "resample_curves",
    "segment_lengths",
    "shortest_path_curves",
    "straight_lines",
    "subdivide_curves",
]
