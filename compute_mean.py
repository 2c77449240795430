"""Compute and save the feature cache's normalisation statistics (for --normalize 1).

The original design's entry point; the code is faceid/cli/compute_mean.py (`python compute_mean.py --help`).
"""

import sys

from faceid.cli.compute_mean import main

if __name__ == "__main__":
    sys.exit(main())
