"""``python -m edgeport.runtime.cli``: the ``edgeport`` command."""

import sys

from edgeport.runtime.cli import main

sys.exit(main())
