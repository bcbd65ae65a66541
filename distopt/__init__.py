"""distopt: multi-objective hyperparameter search on Ray, streamed to an Arrow store.

The data flow is space -> strategy -> orchestrator -> worker -> store -> analysis::

    study = distopt.Study(space={...}, objectives={"test_mse": "min"}, store="runs/demo")
    reader = study.optimize(objective, budget=64, workers=4)
    reader.pareto_front()
"""

from . import schedulers, strategies  # distopt.schedulers.MOASHA works after `import distopt`
from ._context import TrialPruned, device, report, should_stop
from ._errors import ConfigError, DistoptError, StoreError
from ._problem import Problem, TrialResult
from ._study import Study
from ._studyfile import load_study_file
from .cohort import Cohort, batched, cohort
from .space import Categorical, Float, Int, Space
from .store import StoreReader, open_store

__version__ = "0.1.0"

__all__ = [
    "Categorical",
    "Cohort",
    "ConfigError",
    "DistoptError",
    "Float",
    "Int",
    "Problem",
    "Space",
    "StoreError",
    "StoreReader",
    "Study",
    "TrialPruned",
    "TrialResult",
    "batched",
    "cohort",
    "device",
    "load_study_file",
    "open_store",
    "report",
    "schedulers",
    "should_stop",
    "strategies",
]
