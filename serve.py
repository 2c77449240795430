"""Run faceid as a service: cameras, events (SQLite, MQTT, webhooks) and a REST API.

The code is faceid/cli/serve.py (`python serve.py --help`, or `faceid serve --help`).
"""

import sys

from faceid.cli.serve import main

if __name__ == "__main__":
    sys.exit(main())
