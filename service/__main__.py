"""``python -m service`` is the ``densenet`` command."""

import sys

from service.cli import main

sys.exit(main())
