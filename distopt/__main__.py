"""``python -m distopt`` is the ``distopt`` command."""

import sys

from .cli import main

sys.exit(main())
