"""One module (or small package) per experiment, named as its script and its results folder.

``experiments/NAME.py`` (the absl script) -> ``tfquant/experiments/NAME`` (its cells, claims,
notes and how a cell is measured, as a :class:`tfquant.study.Study`) ->
``<results_dir>/<run_name>/NAME/`` (config.json, results.jsonl, results.md). The runner,
records, claims and tables are in :mod:`tfquant.study`; trainers, readbacks and analyses live
in the library packages.
"""
