"""Group the faces nobody enrolled into clusters, one folder of face crops each; name a cluster to enrol it.

Usage:
    python cluster.py --faces_path photos/ --model_path models/extractor --output clusters/ [--html] [--json]
    python cluster.py --video_path clip.mp4 --output clusters/          (faces tracked, then tracks clustered)
    python cluster.py --features features/ --output clusters/            (a feature cache's vectors; no crops)
    python cluster.py name --clusters clusters/ --id c0003 --person alice --features features/
    python cluster.py merge --clusters clusters/ --id c0007 --into c0003
    python cluster.py split --clusters clusters/ --id c0003 [--faces f000012,f000031]

--faces_path: photos, flat or one sub-folder per person; the largest face of each photo (--all_faces:
every face). --enrolled FEATURES leaves out the faces of people enrolled there (as test.py names them).
--output gets clusters.json, vectors.npz and one folder per cluster (c0001/ ...) of face crops named
by face id (f000012.png), and --html its contact sheet (index.html). Run it again on the same --output
to add new photos: they join existing clusters or start new ones, and clusters they do
not touch keep their ids; --recluster re-runs the whole clustering and says what changed. With
--key_file (or $FACEID_KEY) crops and clusters.json are encrypted, and no contact sheet is written.
`name` enrols a cluster's crops as that person in the feature cache (as extract_features.py would);
test.py then names them. `merge` and `split` move the crops with the clusters.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from faceid.cli import add_detection_options, add_verbosity, run_main
from faceid.errors import InputError
from faceid.settings import DEFAULTS

# Library parameters this script's options spell otherwise (cli/__init__.py: translate_message).
ALIASES = {"clusters_dir": "clusters", "cluster_id": "id", "source_id": "id", "into_id": "into", "face_ids": "faces",
           "every": "video_every", "html_path": "html"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces_path", type=Path, help="folder of photos: flat, or one sub-folder per person")
    parser.add_argument("--video_path", type=Path, help="a video file: faces are tracked, then the tracks clustered")
    parser.add_argument("--features", "--features_path", dest="features", type=Path,
                        help="a feature cache: cluster its vectors (no crops); with --faces_path the photos are "
                             "embedded into this cache first (re-runs embed only new photos)")
    parser.add_argument("--model_path", type=Path, default=Path(DEFAULTS.extractor_path),
                        help="extractor directory (network.py --output); its calibration sets the merge thresholds")
    parser.add_argument("--output", type=Path,
                        help="the clustering's folder (required): new, or one a previous run wrote (new faces are "
                             "added)")
    parser.add_argument("--enrolled", type=Path, default=None, metavar="FEATURES",
                        help="a feature cache of enrolled people: faces test.py would name as one of them are left "
                             "out (counted), so only the faces nobody enrolled are clustered")
    parser.add_argument("--all_faces", action="store_true",
                        help="cluster every face of each photo, not only the largest (group photos)")
    parser.add_argument("--recluster", action="store_true",
                        help="re-run the whole clustering (ids kept where clusters overlap most) and say what changed")
    parser.add_argument("--method", default=None,
                        help=f"clustering method of a new clustering (default {DEFAULTS.cluster_method}; "
                             "evaluate.py cluster measures them): linkage, chinese-whispers, hdbscan, dbscan, "
                             "agglomerative")
    parser.add_argument("--html", nargs="?", const=True, default=None, metavar="FILE",
                        help="write a contact sheet, one row per cluster (default FILE: OUTPUT/index.html); "
                             "not with a key (the page would show the encrypted faces in plaintext)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line (the last line)")
    parser.add_argument("--video_every", type=int, default=DEFAULTS.cluster_video_every,
                        help="video: a track's faces are sampled every N detections (smaller: more alike views)")
    parser.add_argument("--track_faces", type=int, default=DEFAULTS.cluster_track_faces,
                        help="video: faces embedded and cropped per track, spread over it")
    parser.add_argument("--min_track", type=int, default=DEFAULTS.cluster_min_track,
                        help="video: tracks detected in fewer frames are dropped (raise it against false detections)")
    parser.add_argument("--max_frames", type=int, default=None, help="video: stop after this many frames")
    add_detection_options(parser)
    parser.add_argument("--workers", type=int, default=DEFAULTS.workers,
                        help="processes detecting faces when embedding into --features")
    add_verbosity(parser)
    actions = parser.add_subparsers(dest="action", metavar="{name,merge,split}",
                                    help="change a clustering (cluster.py ACTION --help); none: cluster a source")
    name = actions.add_parser("name", help="enrol a cluster's faces as a person in a feature cache, record the name")
    merge = actions.add_parser("merge", help="merge one cluster into another (which keeps its id and name)")
    split = actions.add_parser("split", help="split faces out of a cluster into a new one")
    for action in (name, merge, split):
        action.add_argument("--clusters", type=Path, required=True,
                            help="the clustering's folder (cluster.py --output)")
        action.add_argument("--id", required=True, help="the cluster (e.g. c0003)")
    name.add_argument("--person", required=True, help="the person's name (their folder name)")
    name.add_argument("--features", "--features_path", dest="features", type=Path, default=Path(DEFAULTS.features_path),
                      help="the feature cache they are enrolled in (made if missing)")
    name.add_argument("--model_path", type=Path, default=Path(DEFAULTS.extractor_path),
                      help="extractor directory: the one that made the clustering (and the cache)")
    add_detection_options(name)
    merge.add_argument("--into", required=True, help="the cluster that receives the faces (keeps its id)")
    split.add_argument("--faces", default=None,
                       help="comma-separated face ids to split out (default: the clustering splits it in two)")
    for action in (name, merge, split):
        action.add_argument("--json", action="store_true", help="print the summary as one JSON line (the last line)")
        add_verbosity(action)
    return parser


def run(args: argparse.Namespace) -> int:
    from faceid.apps import clustering
    from faceid.backbones import load_extractor
    from faceid.detect.faces import FaceOptions

    if args.action == "merge":
        report = clustering.merge_clusters(args.clusters, args.id, args.into, key=args.key)
    elif args.action == "split":
        faces = None if args.faces is None else [face.strip() for face in args.faces.split(",") if face.strip()]
        report = clustering.split_cluster(args.clusters, args.id, faces, key=args.key)
    elif args.action == "name":
        report = clustering.name_cluster(args.clusters, args.id, args.person, args.features,
                                         load_extractor(args.model_path),
                                         face_options=FaceOptions(upsample=args.upsample, detector=args.detector),
                                         key=args.key)
    else:
        if args.output is None:
            raise InputError("pass `output`, the folder the clustering goes to (or an action: name, merge, split)")
        extractor = load_extractor(args.model_path)
        gallery = None if args.enrolled is None else clustering.enrolled_gallery(args.enrolled, extractor,
                                                                                  args.model_path, key=args.key)
        report = clustering.cluster_faces(
            args.output, extractor, faces_path=args.faces_path, video_path=args.video_path,
            features=args.features, extractor_dir=args.model_path,
            face_options=FaceOptions(upsample=args.upsample, detector=args.detector), all_faces=args.all_faces,
            recluster=args.recluster, method=args.method, html_path=args.html, video_every=args.video_every,
            track_faces=args.track_faces, min_track=args.min_track, max_frames=args.max_frames, workers=args.workers,
            progress=not (args.quiet or args.json), gallery=gallery, key=args.key)
    return _print(report, args.json)


def _print(report, as_json: bool) -> int:
    if as_json:
        print(json.dumps(report.as_dict()))
    else:
        print(report.report())
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), run, argv, ALIASES)


if __name__ == "__main__":
    sys.exit(main())
