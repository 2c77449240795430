"""Encryption keys for stored faces and vectors: create, show, encrypt, rotate, decrypt.

The code is faceid/cli/keys.py (`python keys.py --help`).
"""

import sys

from faceid.cli.keys import main

if __name__ == "__main__":
    sys.exit(main())
