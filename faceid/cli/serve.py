"""Run faceid as a service: cameras, events (SQLite, MQTT, webhooks) and a REST API.

Usage:
    faceid serve --data DIR [--model EXTRACTOR] [--host 127.0.0.1] --port P
                 [--camera NAME=SOURCE ...] [--loop] [--key_file K]
                 [--mqtt mqtt://HOST:1883] [--webhook URL ...] [--webhook_secret_file F]
    faceid serve token create --data DIR [--label TEXT]   # prints the token alone on its last line
    faceid serve token revoke --data DIR TOKEN_OR_ID
    faceid serve token list --data DIR

Everything lives in --data: the feature cache (features/), the enrolment photos (faces/), the
database of people, cameras, tokens and events (faceid.db, SQLite in WAL mode) and the events' face
crops (events/). Every endpoint but /health needs 'Authorization: Bearer TOKEN'; make one with
'faceid serve token create' first. The API's documentation is served at /docs.

A camera SOURCE is a webcam number, a video file (--loop plays it again when it ends) or a stream URL
(rtsp://, http://...). Cameras given here, and those added through POST /cameras, are kept in the
database and run again at the next start. SIGTERM or Ctrl-C stops the cameras (their open events are
closed) and exits. It listens on 127.0.0.1 unless --host says otherwise: put a reverse proxy with TLS
in front before opening it to a network (docs/serve.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from faceid.cli import add_verbosity, run_main
from faceid.detect.faces import DETECTORS
from faceid.errors import InputError
from faceid.settings import DEFAULTS

logger = logging.getLogger("faceid.serve")

WEBHOOK_SECRET_ENV = "FACEID_WEBHOOK_SECRET"
ALIASES = {"mqtt_url": "mqtt", "webhook_urls": "webhook", "data_dir": "data", "max_image_pixels": "max_pixels",
           "max_upload_bytes": "max_upload_mb", "name": "camera",
           "source": "camera"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the service's data directory (created if missing)")
    parser.add_argument("--model", "--model_path", dest="model", type=Path, default=None,
                        help="extractor directory (network.py); default: dlib's face model, built in memory")
    parser.add_argument("--detector", choices=DETECTORS, default=None,
                        help=f"face detector for uploads and cameras (default: {DEFAULTS.detector} for uploads, "
                             f"{DEFAULTS.live_detector} for cameras)")
    parser.add_argument("--host", default=DEFAULTS.serve_host,
                        help="interface to listen on (default %(default)s: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULTS.serve_port, help="port (default %(default)s)")
    parser.add_argument("--camera", action="extend", nargs="+", default=[], metavar="NAME=SOURCE",
                        help="cameras to run (--camera a=0 b=door.mp4, or the flag repeated): a webcam number, "
                             "a video file or a stream URL each")
    parser.add_argument("--loop", action="store_true", help="play the video files of --camera from the start when they end")
    parser.add_argument("--mqtt", default=None, metavar="URL",
                        help="send events to this MQTT broker: mqtt://[user:password@]host[:port]")
    parser.add_argument("--mqtt_prefix", default="faceid", help="the MQTT topics' first level (default %(default)s)")
    parser.add_argument("--webhook", action="append", default=[], metavar="URL",
                        help="POST every event to this URL (repeatable)")
    parser.add_argument("--webhook_secret_file", type=Path, default=None,
                        help=f"sign webhooks with HMAC-SHA256 using this file's content (else ${WEBHOOK_SECRET_ENV})")
    parser.add_argument("--retention_days", type=float, default=DEFAULTS.retention_days,
                        help="delete closed events (rows and crops) older than this (default %(default)g)")
    parser.add_argument("--max_upload_mb", type=float, default=DEFAULTS.max_upload_bytes / 2**20,
                        help="largest request body in MiB (default %(default)g); larger: 413")
    parser.add_argument("--max_pixels", type=float, default=DEFAULTS.max_image_pixels,
                        help="most pixels an uploaded image may have (default %(default)g); more: 413")
    parser.add_argument("--no_docs", action="store_true",
                        help="do not serve the API's documentation (/docs, /openapi.json: no data, no token needed)")
    add_verbosity(parser)
    return parser


class _IntermixedParser(argparse.ArgumentParser):
    """Options and positionals in any order: ``token revoke --data DIR ID`` as well as ``token revoke ID --data DIR``."""

    def parse_args(self, args=None, namespace=None):
        return self.parse_intermixed_args(args, namespace)


def build_token_parser() -> argparse.ArgumentParser:
    parser = _IntermixedParser(prog=f"{Path(sys.argv[0]).name} token", description="Manage the API's bearer tokens.")
    parser.add_argument("action", choices=("create", "revoke", "list"))
    parser.add_argument("token", nargs="?", default=None, help="revoke: the token or its id")
    parser.add_argument("--data", type=Path, required=True, help="the service's data directory")
    parser.add_argument("--label", default=None, help="create: a note on who or what the token is for")
    add_verbosity(parser, key_file=False)
    return parser


#: Parsers of words that come first: `faceid serve token ...` is read by build_token_parser (the docs'
#: command checker and the CLI reference use this too).
LEADING_PARSERS = {"token": build_token_parser}


def parse_cameras(specs: list[str], loop: bool):
    """``NAME=SOURCE`` strings as camera configurations."""
    from faceid.service.cameras import CameraConfig

    cameras = []
    for spec in specs:
        name, equals, source = spec.partition("=")
        if not equals:
            raise InputError(f"a camera is NAME=SOURCE (e.g. door=rtsp://camera/stream), not {spec!r}")
        cameras.append(CameraConfig.parse(name.strip(), source.strip(), loop))
    names = [camera.name for camera in cameras]
    if len(set(names)) != len(names):
        raise InputError(f"two cameras share a name: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    return cameras


def webhook_secret(args: argparse.Namespace) -> bytes | None:
    if args.webhook_secret_file is not None:
        try:
            secret = args.webhook_secret_file.read_bytes().strip()
        except OSError as error:
            raise InputError(f"cannot read --webhook_secret_file {args.webhook_secret_file}: {error.strerror}") from error
    else:
        secret = os.environ.get(WEBHOOK_SECRET_ENV, "").encode().strip()
    if args.webhook and not secret:
        logger.warning("webhooks are not signed: pass --webhook_secret_file (or set $%s)", WEBHOOK_SECRET_ENV)
    return secret or None


def run(args: argparse.Namespace) -> int:
    from faceid.extras import require_all
    from faceid.service.server import Service, ServiceOptions

    require_all(["fastapi", "uvicorn", "multipart", "prometheus_client"], "faceid serve")
    if args.mqtt:
        require_all(["paho"], "faceid serve --mqtt")
    if not 0 < args.port < 65536:
        raise InputError(f"--port must be between 1 and 65535, got {args.port}")
    options = ServiceOptions(
        model=args.model, detector=args.detector, key=args.key, mqtt=args.mqtt, mqtt_prefix=args.mqtt_prefix,
        webhooks=list(args.webhook), webhook_secret=webhook_secret(args), retention_days=args.retention_days,
        max_upload_bytes=int(args.max_upload_mb * 2**20), max_image_pixels=int(args.max_pixels), docs=not args.no_docs,
    )
    service = Service(args.data, options, parse_cameras(args.camera, args.loop))
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("listening on %s: other machines can reach the API; put a TLS reverse proxy in front "
                       "(docs/serve.md)", args.host)
    serve(service, args.host, args.port, args.verbose)
    return 0


def serve(service, host: str, port: int, verbose: bool = False) -> None:
    """Serve ``service`` with uvicorn until SIGTERM or Ctrl-C (then stop it in order)."""
    import uvicorn

    from faceid.service.app import create_app

    # -v: a line per request too (method, path, status: no header, no body; never a token).
    config = uvicorn.Config(create_app(service), host=host, port=port, log_level="info", access_log=bool(verbose),
                            timeout_graceful_shutdown=15, log_config=None)
    # The port first: a service that cannot listen starts no camera and touches no event.
    try:
        sock = config.bind_socket()
    except SystemExit:  # uvicorn logged why (in use, no permission)
        raise InputError(f"could not listen on {host}:{port}: is the port in use? pass another --port") from None
    server = uvicorn.Server(config)
    # Open live views (MJPEG streams) would hold the graceful shutdown until its timeout: they end when told.
    handle_exit = server.handle_exit

    def stop_streams_then_exit(sig, frame) -> None:
        service.closing.set()
        handle_exit(sig, frame)

    server.handle_exit = stop_streams_then_exit
    # uvicorn stops gracefully on SIGTERM, then raises the signal again for the handler it found: a
    # handler that does nothing lets the process exit 0 after an orderly stop (what service managers expect).
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server.run(sockets=[sock])
    if not server.started:
        raise InputError(f"faceid serve did not start on {host}:{port}: see the lines above")


def run_token(args: argparse.Namespace) -> int:
    from faceid.service.store import ServiceStore

    with ServiceStore(args.data, tokens_only=True) as store:
        if args.action == "create":
            token_id, token = store.create_token(args.label)
            print(f"token {token_id} created; it is shown once, keep it secret (send it as 'Authorization: Bearer ...'):",
                  file=sys.stderr)
            print(token)
        elif args.action == "revoke":
            if not args.token:
                raise InputError("token revoke needs the token or its id")
            if not store.revoke_token(args.token):
                raise InputError(f"no active token {args.token if len(args.token) <= 8 else '(the one given)'}")
            print("revoked")
        else:
            for row in store.list_tokens():
                state = f"revoked {row['revoked']}" if row["revoked"] else "active"
                print(f"{row['id']}  {state}  created {row['created']}  last used {row['last_used'] or 'never'}"
                      f"  {row['label'] or ''}".rstrip())
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in LEADING_PARSERS:
        return run_main(LEADING_PARSERS[argv[0]](), run_token, argv[1:], aliases=ALIASES)
    return run_main(build_parser(), run, argv, aliases=ALIASES)


if __name__ == "__main__":
    sys.exit(main())
