"""Turn face photos into pencil-sketch-like images (data enlargement for sketch retrieval, or to look at).

The code is faceid/cli/photo2sketch.py (`python photo2sketch.py --help`).
"""

import sys

from faceid.cli.photo2sketch import main

if __name__ == "__main__":
    sys.exit(main())
