"""Save aligned face crops of one person from the webcam or a video, into faces/<person>/.

The original design's entry point; the code is faceid/cli/capture.py (`python capture.py --help`).
"""

import sys

from faceid.cli.capture import main

if __name__ == "__main__":
    sys.exit(main())
