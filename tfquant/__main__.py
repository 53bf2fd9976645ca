"""``python -m tfquant``: see :mod:`tfquant.cli`."""

import sys

from tfquant.cli import main

sys.exit(main())
