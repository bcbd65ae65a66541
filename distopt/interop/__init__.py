"""Interop with the tools users already know.

* :mod:`distopt.interop.tune`: any distopt strategy as a Ray Tune ``Searcher``
  (``DistoptSearcher``), a ``Repeater`` that averages every metric, and multi-objective ASHA as
  a Tune scheduler (``MOASHAScheduler``).
* :mod:`distopt.interop.optuna`: export a store to an Optuna study (optuna-dashboard shows it),
  keep one in sync with a running search (``sync_store``, ``follow``, ``distopt dashboard``),
  and import an Optuna study into a store.

Each submodule imports its tool on first use; ``import distopt.interop`` imports neither.
"""
