"""``python -m sgm_lightning``: the ``sgm`` command."""

import sys

from .cli import main

sys.exit(main())
