"""Benchmarks behind ``bench.py``: one module per sub-command.

Each module has ``add_arguments(parser)`` and ``run(args) -> int``; it prints a
table and, as its last lines of stdout, one JSON object per measured
configuration. Timings always include a baseline run in the same process, so the
ratio is meaningful on whatever machine runs it.
"""

SUBCOMMANDS = {
    "live": "faceid.benchmarks.live",
    "extract": "faceid.benchmarks.extract",
    "match": "faceid.benchmarks.match",
    "detect": "faceid.benchmarks.detect",
    "align": "faceid.benchmarks.align",
    "retrieve": "faceid.benchmarks.retrieve",
    "encryption": "faceid.benchmarks.encryption",
    "startup": "faceid.benchmarks.startup",
    "install": "faceid.benchmarks.install",
    "ray": "faceid.benchmarks.ray_engine",
    "cluster": "faceid.benchmarks.cluster",
    "serve": "faceid.benchmarks.serve",
}
