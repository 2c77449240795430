#!/usr/bin/env bash
# One entry point for the two things everyone does first.
#   ./run.sh demo   set up .venv, train the head on LFW DevTrain, identify the people in the clip
#   ./run.sh test   set up .venv and run the test suite
#   ./run.sh core-demo   pip install . (no extras) into .venv-core and identify the people in the clip there
set -euo pipefail
cd "$(dirname "$0")"
DATA="${FACEID_DATA:-../shared/data}"
OUT="${FACEID_OUT:-work/demo}"

setup() {
    [ -x .venv/bin/python ] || python3 -m venv .venv
    # The package, editable, with every extra but [gui] (pyproject.toml declares them). Re-install
    # only when pyproject.toml changed since the last successful install.
    if ! cmp -s pyproject.toml .venv/.installed-pyproject 2>/dev/null; then
        .venv/bin/python -m pip install --quiet --upgrade pip
        .venv/bin/python -m pip install --quiet -e ".[dev]"
        cp pyproject.toml .venv/.installed-pyproject
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

core_demo() {
    # What a user of `pip install faceid` gets: the core only, no TensorFlow; a fresh venv every time.
    local venv="${FACEID_CORE_VENV:-.venv-core}" out="$OUT-core"
    rm -rf "$venv" && python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet .
    mkdir -p "$out"
    "$venv/bin/faceid" network --backbone dlib --output "$out/extractor"
    "$venv/bin/faceid" extract --faces_path "$DATA/video/known" --model_path "$out/extractor" --features "$out/known_features"
    "$venv/bin/faceid" identify --features "$out/known_features" --model "$out/extractor" --scorer euclidean \
        --video_path "$DATA/video/hamilton_clip.mp4" --no_display \
        --output "$out/hamilton_annotated.mp4" --jsonl "$out/hamilton.jsonl"
    echo "annotated video: $out/hamilton_annotated.mp4  per-face log: $out/hamilton.jsonl"
}

case "${1:-}" in
    demo) setup; demo ;;
    test) setup; shift; exec .venv/bin/python -m pytest -q tests "$@" ;;
    setup) setup ;;
    core-demo) core_demo ;;
    *) echo "usage: ./run.sh demo|test|setup|core-demo" >&2; exit 2 ;;
esac
