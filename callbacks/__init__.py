"""Training callbacks: geodesic distance statistics, curvature figures and reconstructions."""

from callbacks.curvature_plots import CurvaturePlots
from callbacks.geodesic_stats import GeodesicDistanceStats
from callbacks.reconstructions import ReconstructionImages

__all__ = ["CurvaturePlots", "GeodesicDistanceStats", "ReconstructionImages"]
