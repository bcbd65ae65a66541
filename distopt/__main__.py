"""``python -m distopt`` is the ``distopt`` command."""

from .cli import console

console()
