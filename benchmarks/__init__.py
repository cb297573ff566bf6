"""The benchmark harnesses behind ``scripts/benchmark_*.py``, one concern per module.

Geodesics (``scripts/benchmark_geodesics.py``; command line: :mod:`benchmarks.geodesics_cli`):
:mod:`benchmarks.decoders` (the decoder family: trained VAEs and synthetic decoders),
:mod:`benchmarks.methods` (the timed runs of ours, stochman, the Adam and graph references),
:mod:`benchmarks.reference_cache` (reference curves kept between runs),
:mod:`benchmarks.measure` (the common fine length measurement), :mod:`benchmarks.geodesics`
(one decoder's comparison, its statistics, the whole run), :mod:`benchmarks.geodesic_report`
(tables and the JSON file) and :mod:`benchmarks.geodesic_matrix` (the graph distance matrix,
timed in a child process).

Training epochs (``scripts/benchmark_training.py``; command line:
:mod:`benchmarks.training_cli`): :mod:`benchmarks.training` (the plain loop, the paired fits)
and :mod:`benchmarks.training_report` (the table and the targets); the Lightning side is timed
by :class:`callbacks.PairedEpochTimer`.

Streamed distance matrices (``scripts/benchmark_distances.py``; command line:
:mod:`benchmarks.distances_cli`): :mod:`benchmarks.distances`.

Shared: :mod:`benchmarks.common` (the checkout's root, progress lines, the source state).
Nothing is imported here: ``python -m benchmarks.geodesics_cli`` runs the module fresh.
"""
