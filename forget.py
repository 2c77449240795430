"""Remove one person from the feature cache, its galleries and (asked) their enrolment images.

The code is faceid/cli/forget.py (`python forget.py --help`).
"""

import sys

from faceid.cli.forget import main

if __name__ == "__main__":
    sys.exit(main())
