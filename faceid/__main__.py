"""``python -m faceid``: the ``faceid`` command (faceid/cli/main.py) without the installed entry point."""

import sys

from faceid.cli.main import main

sys.exit(main())
