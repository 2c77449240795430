"""Benchmarks that print numbers and ratios against a baseline run in the same process.

The original design's entry point; the code is faceid/cli/bench.py (`python bench.py --help`).
"""

import sys

from faceid.cli.bench import main

if __name__ == "__main__":
    sys.exit(main())
