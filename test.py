"""Identify enrolled people live: every face of a webcam, a video or a folder of photos.

The original design's entry point; the code is faceid/cli/identify.py (`python test.py --help`).
"""

import sys

from faceid.cli.identify import main

if __name__ == "__main__":
    sys.exit(main())
