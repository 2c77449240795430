"""Build the frozen feature extractor and save it as a directory.

The original design's entry point; the code is faceid/cli/network.py (`python network.py --help`).
"""

import sys

from faceid.cli.network import main

if __name__ == "__main__":
    sys.exit(main())
