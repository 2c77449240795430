"""Encryption keys for the biometric data faceid keeps, and converting data to them.

Usage:
    python keys.py new --output secrets/faceid.key         # a new key file (owner-only, never overwritten)
    python keys.py id --key_file secrets/faceid.key        # its key id (what files and messages name)
    python keys.py encrypt --features features/ [--faces_path faces/] --key_file K
    python keys.py rotate  --features features/ [--faces_path faces/] --key_file OLD --new_key_file NEW
    python keys.py decrypt --features features/ [--faces_path faces/] --key_file K

encrypt / rotate / decrypt convert in place, file by file, atomically: an interrupted run is
finished by running the same command again; readers refuse a half-converted cache meanwhile.
They convert the cache at --features and every cache below it (retrieval galleries), and with
--faces_path every image of that enrolment folder (crops, capture.py's frames).
Keep the key file apart from the data (another disk, a password manager): whoever holds both
holds the faces. After rotate, delete the old key file, and old copies (backups) become unreadable.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from faceid.cli import add_verbosity, run_main
from faceid.errors import InputError
from faceid.io import sealed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("new", help="write a new key file (mode 0600; never overwrites)")
    new.add_argument("--output", type=Path, required=True, help="key file to create")
    add_verbosity(new, key_file=False)
    show = commands.add_parser("id", help="print the id of a key (--key_file or $FACEID_KEY)")
    add_verbosity(show)
    for name, what in (("encrypt", "encrypt plaintext data with --key_file"),
                       ("rotate", "re-encrypt data from --key_file to --new_key_file"),
                       ("decrypt", "decrypt data encrypted with --key_file back to plaintext")):
        command = commands.add_parser(name, help=what)
        command.add_argument("--features", "--features_path", dest="features", type=Path, default=None,
                             help="feature cache to convert (and every cache below it)")
        command.add_argument("--faces_path", type=Path, default=None, help="enrolment folder whose images to convert")
        if name == "rotate":
            command.add_argument("--new_key_file", type=Path, required=True, help="the key to re-encrypt with")
        command.add_argument("--json", action="store_true", help="print the report as one JSON line")
        add_verbosity(command)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.command == "new":
        key = sealed.new_key()
        sealed.write_key_file(args.output, key)
        print(f"key {key.id} written to {args.output} (mode 0600). Keep a copy apart from the data: "
              "without it, what it encrypts cannot be read.")
        return 0
    key = args.key
    if key is None:
        raise sealed.KeyRequiredError(f"keys.py {args.command} needs a key: pass --key_file FILE or set {sealed.KEY_ENV}")
    if args.command == "id":
        print(key.id)
        return 0
    old, new = {"encrypt": (None, key), "rotate": (key, None), "decrypt": (key, None)}[args.command]
    if args.command == "rotate":
        new = sealed.read_key_file(args.new_key_file)
        if new.id == old.id:
            raise InputError(f"--new_key_file {args.new_key_file} is the same key ({new.id}) as --key_file")
    if args.features is None and args.faces_path is None:
        raise InputError(f"keys.py {args.command}: pass --features DIR and/or --faces_path DIR")
    report = convert(args.features, args.faces_path, old, new)
    print(json.dumps(report) if args.json else "\n".join(
        f"{place}: {counts['rewritten']} files converted, {counts['already']} already done" for place, counts in report.items()))
    return 0


def convert(features: Path | None, faces_path: Path | None, old: sealed.Key | None,
            new: sealed.Key | None) -> dict[str, dict[str, int]]:
    """Convert the caches under ``features`` and the images under ``faces_path`` (the one place:
    keys.py and extract_features.py --encrypt)."""
    from faceid.features.cache import nested_caches, reseal_cache
    from faceid.io.images import reseal_images

    report: dict[str, dict[str, int]] = {}
    if features is not None:
        caches = nested_caches(features)
        if not caches:
            raise InputError(f"--features {features} holds no feature cache (no manifest.json)")
        for cache in caches:
            report[str(cache)] = reseal_cache(cache, old, new)
    if faces_path is not None:
        report[str(faces_path)] = reseal_images(faces_path, old, new)
    return report


def main(argv: list[str] | None = None) -> int:
    # reseal_*(folder, old, new): the key the data has now is --key_file, the one it gets --new_key_file.
    return run_main(build_parser(), run, argv,
                    aliases={"old": "key_file", "new": "new_key_file", "folder": "faces_path"})


if __name__ == "__main__":
    sys.exit(main())
