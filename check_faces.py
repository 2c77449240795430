"""Audit enrolment folders before extraction: what would hurt recognition, file by file.

The original design's entry point; the code is faceid/cli/check_faces.py (`python check_faces.py --help`).
"""

import sys

from faceid.cli.check_faces import main

if __name__ == "__main__":
    sys.exit(main())
