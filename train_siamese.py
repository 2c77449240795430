"""Train a siamese network end to end; writes an extractor directory for the other scripts.

The code is faceid/cli/train_siamese.py (`python train_siamese.py --help`).
"""

import sys

from faceid.cli.train_siamese import main

if __name__ == "__main__":
    sys.exit(main())
