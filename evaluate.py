"""Measure accuracy the way the field does: LFW pair verification, identification, N-way one-shot.

The original design's entry point; the code is faceid/cli/evaluate.py (`python evaluate.py --help`).
"""

import sys

from faceid.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
