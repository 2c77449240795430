"""Group the faces nobody enrolled into clusters of face crops; name a cluster to enrol that person.

The code is faceid/cli/cluster.py (`python cluster.py --help`).
"""

import sys

from faceid.cli.cluster import main

if __name__ == "__main__":
    sys.exit(main())
