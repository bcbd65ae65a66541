"""Search spaces: parameter types and the unit-cube encoding shared by every strategy."""

from ._params import OFF_BAND, Categorical, Float, Int, Param
from ._space import Space, param_from_spec

__all__ = ["OFF_BAND", "Categorical", "Float", "Int", "Param", "Space", "param_from_spec"]
