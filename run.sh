#!/usr/bin/env bash
# One entry point for the two things everyone does first.
#   ./run.sh demo   set up .venv, train the head on LFW DevTrain, identify the people in the clip
#   ./run.sh test   set up .venv and run the test suite
set -euo pipefail
cd "$(dirname "$0")"
DATA="${FACEID_DATA:-../shared/data}"
OUT="${FACEID_OUT:-work/demo}"

setup() {
    [ -x .venv/bin/python ] || python3 -m venv .venv
    # Re-install only when requirements.txt changed since the last successful install.
    if ! cmp -s requirements.txt .venv/.installed-requirements 2>/dev/null; then
        .venv/bin/python -m pip install --quiet --upgrade pip
        .venv/bin/python -m pip install --quiet -r requirements.txt
        cp requirements.txt .venv/.installed-requirements
    fi
}

demo() {
    local py=.venv/bin/python
    mkdir -p "$OUT"
    $py network.py --backbone dlib --output "$OUT/extractor"
    $py extract_features.py --faces_path "$DATA/lfw_devtrain" --model_path "$OUT/extractor" --features "$OUT/lfw_features"
    $py compute_mean.py --features_path "$OUT/lfw_features"
    $py train.py --features_path "$OUT/lfw_features" --output_model "$OUT/similarity"
    $py extract_features.py --faces_path "$DATA/video/known" --model_path "$OUT/extractor" --features "$OUT/known_features"
    $py test.py --features "$OUT/known_features" --model "$OUT/extractor" --classification "$OUT/similarity" \
        --video_path "$DATA/video/hamilton_clip.mp4" --no_display \
        --output "$OUT/hamilton_annotated.mp4" --jsonl "$OUT/hamilton.jsonl"
    echo "annotated video: $OUT/hamilton_annotated.mp4  per-face log: $OUT/hamilton.jsonl"
}

case "${1:-}" in
    demo) setup; demo ;;
    test) setup; shift; exec .venv/bin/python -m pytest -q tests "$@" ;;
    setup) setup ;;
    *) echo "usage: ./run.sh demo|test|setup" >&2; exit 2 ;;
esac
