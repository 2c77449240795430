"""Embed every enrolled face once and cache the vectors per person.

The original design's entry point; the code is faceid/cli/extract_features.py (`python extract_features.py --help`).
"""

import sys

from faceid.cli.extract_features import main

if __name__ == "__main__":
    sys.exit(main())
