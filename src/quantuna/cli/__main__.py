"""``python -m quantuna.cli``: the ``quantuna`` command."""

import sys

from quantuna.cli.app import main

sys.exit(main())
