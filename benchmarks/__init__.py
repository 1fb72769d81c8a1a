"""kdhw's benchmarks: each module is a script, run from the repository root as ``python -m benchmarks.NAME``
(for example ``.venv/bin/python -m benchmarks.kd_pays --help``); results land in ``benchmarks/results/``.

What several of them share (the repository root, the ``kd_pays`` students and teachers, the recipe tasks,
statistics, result files, command-line pieces) is in ``benchmarks.common``.  ``hgq2_worker.py`` is the
exception: ``pareto_vs_hgq2`` runs it by path inside HGQ2's own virtualenv, and it imports nothing from here.
"""
