"""Accuracy the way the field measures it: LFW pair verification, identification, N-way one-shot.

Three evaluations share one set-up (an extractor, optionally a similarity model and a
feature cache) and compare the same *methods* side by side:

* ``euclidean``: minus the Euclidean distance of the two vectors;
* ``cosine``: the dot product of the L2-normalised vectors;
* ``head``: the similarity model given with ``--classification`` (its head on
  ``|z(a) - z(b)|``, with the normaliser it was trained with);
* ``head_per_fold`` (pairs only, ``--train_per_fold``): a fresh head trained for each
  fold on the other folds' pairs, LFW's *restricted* protocol.

Higher scores always mean "more likely the same person" and a pair is accepted when
``score >= threshold`` (the convention of :mod:`faceid.match.metrics`).

**Pairs** (:func:`evaluate_pairs`) reads an LFW pair list. ``pairs.txt`` (header
``10 300``) brings its own 10 person-disjoint folds. A single list such as
``pairsDevTrain.txt`` (header ``1100``) is cut into ``folds`` contiguous chunks of its
same pairs and of its different pairs; such folds share people (the summary says so
under ``folds.person_disjoint``, which is computed, not assumed), so their spread is
a little optimistic. Per fold, the threshold with the best accuracy on the *other*
folds is applied to the fold; accuracy is the mean (and sample std) over folds. ROC
AUC, EER and TAR at fixed FARs are computed on the pooled scores, each pair scored
by a model that did not train on it.

Images are taken from a feature cache made by the same extractor when it holds them
(same person folder, file name and sha256), and embedded otherwise, with the same
detection and alignment as extraction. Which face is the person's: the largest, as
extraction takes it (``face_choice="largest"``, the default for identification), or the
one at the image centre (``"centre"``, the default for pairs: LFW labels the centred
face, which is not always the largest; this detects every image again and reuses a
cached vector only when the two choices agree). An image with no (centred) face is,
with ``no_face="centre"``, embedded from a landmark-aligned box where dlib's
detector puts faces in LFW's deep-funnelled photos (what dlib's own LFW evaluation did
with detector misses); with ``no_face="skip"`` it is left out, and a pair that needs it
is *rejected* (scored below every other pair). Either way the share of such images is
reported. A listed image that does not exist is dropped with its pair, or, for a
different pair with ``missing="replace"``, swapped for a random image of another
person from the same fold.

**Identify** (:func:`evaluate_identify`) enrols ``gallery_per_person`` images of each
known person and scores every other image by the per-person score of
:func:`faceid.match.scoring.person_scores`: rank-1, rank-5 and the CMC curve (closed set), and,
with a share of people held out as strangers, the detection-and-identification rate
at 1 % of strangers accepted and the stranger rejection rate at a fixed threshold
(open set).

**One-shot** (:func:`evaluate_oneshot`): Koch et al.'s N-way one-shot task.

Modules: :mod:`.methods` (the scorers), :mod:`.pairlist` (LFW lists), :mod:`.images`
(vectors from the cache or embedded), :mod:`.common` (set-up and result),
:mod:`.folds`, :mod:`.pairs`, :mod:`.identify`, :mod:`.oneshot` (one protocol each) and
:mod:`.report` (table, plots, HTML page).
"""

from faceid.evaluate.common import Evaluation
from faceid.evaluate.folds import FoldAccuracy, fold_accuracy
from faceid.evaluate.identify import evaluate_identify, open_set_rates
from faceid.evaluate.images import FACE_CHOICES, NO_FACE_POLICIES, centred_face
from faceid.evaluate.methods import Method, build_methods
from faceid.evaluate.oneshot import evaluate_oneshot, oneshot_correct, wilson_interval
from faceid.evaluate.pairlist import PairList, read_pair_list
from faceid.evaluate.pairs import MISSING_POLICIES, evaluate_pairs

__all__ = [
    "FACE_CHOICES", "MISSING_POLICIES", "NO_FACE_POLICIES", "Evaluation", "FoldAccuracy", "Method", "PairList",
    "build_methods", "centred_face", "evaluate_identify", "evaluate_oneshot", "evaluate_pairs", "fold_accuracy",
    "oneshot_correct", "open_set_rates", "read_pair_list", "wilson_interval",
]
