"""Find the person in a photo gallery from a sketch (or any face image): ranked candidates, a contact sheet.

The code is faceid/cli/retrieve.py (`python retrieve.py --help`).
"""

import sys

from faceid.cli.retrieve import main

if __name__ == "__main__":
    sys.exit(main())
