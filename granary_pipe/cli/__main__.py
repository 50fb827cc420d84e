"""``python -m granary_pipe.cli``: the ``granary`` command (used by Ray jobs and torchrun)."""

import sys

from granary_pipe.cli import main

sys.exit(main())
