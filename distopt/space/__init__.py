"""Search spaces: parameter types and the unit-cube encoding shared by every strategy."""

from ._params import OFF_BAND, Categorical, Float, Int, Param
from ._space import KEY_DECIMALS, Space, param_from_spec, point_keys

__all__ = ["KEY_DECIMALS", "OFF_BAND", "Categorical", "Float", "Int", "Param", "Space",
           "param_from_spec", "point_keys"]
