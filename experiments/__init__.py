"""Experiments of the paper as importable functions (the reproduction entry point wires them)."""

from experiments.land import clustering_f_measure, run_land_experiment

__all__ = ["clustering_f_measure", "run_land_experiment"]
