"""Train the similarity head on cached features, validated on held-out people.

The original design's entry point; the code is faceid/cli/train.py (`python train.py --help`).
"""

import sys

from faceid.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
