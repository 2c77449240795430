"""Cut the face out of every photo: <selfies>/<person>/<photo> -> <faces>/<person>/<photo>.png.

The original design's entry point; the code is faceid/cli/selfies2face.py (`python selfies2face.py --help`).
"""

import sys

from faceid.cli.selfies2face import main

if __name__ == "__main__":
    sys.exit(main())
