"""Every default of the toolkit, in one frozen object.

Scripts take their ``argparse`` defaults from :data:`DEFAULTS`, so a default is
changed here once and every script, README example and test follows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    # --- backbone (network.py) -------------------------------------------------
    # dlib's face-trained ResNet: in the core install (no TensorFlow), ships with
    # face_recognition_models, and far more accurate on faces than ImageNet features.
    # "resnet50", the original design, needs the [train] extra and ImageNet weights.
    backbone: str = "dlib"
    # ResNet50 cut after the second block of stage 5 (old Keras: activation_46):
    # deep enough to be semantic, one block short of the ImageNet-class-specific top.
    resnet_layer: str = "conv5_block2_out"
    # ResNet50's native ImageNet resolution; smaller inputs run faster but the
    # 7x7 final grid shrinks with them.
    input_size: int = 224
    pooling: str = "avg"
    weights: str = "imagenet"
    model_name: str = "extractor"
    # Test-time augmentation: "flip" embeds each chip and its mirror image and averages the
    # two (twice the backbone work, ~4 ms more per face with dlib on ONNX Runtime). Measured on
    # LFW DevTrain pairs (README) it is better than "none" on accuracy, AUC, EER and TAR at
    # FAR 1e-3, so it is the default; "none" gives dlib's own vectors.
    tta: str = "flip"
    # "int8" quantises the ONNX graph (static, calibrated on real face chips); see README.
    precision: str = "fp32"
    # Face photos the int8 calibration reads at most (one chip each).
    calibration_images: int = 200

    # --- detection and alignment (shared by every script) ----------------------
    # Upsampling doubles the image per step so dlib's HOG finds faces smaller than
    # its ~80 px window; 1 finds ~40 px faces at ~4x the cost of 0.
    upsample: int = 1
    # Enrolment, extraction, the audit and evaluation: MediaPipe's BlazeFace on our ONNX graph. On
    # LFW DevTrain pairs it identifies as well as dlib's HOG (Euclidean 98.73 vs 98.68 %, cosine
    # 98.95 vs 99.09 %, within a fold's spread), finds a face in every photo (HOG: 14 without one)
    # and extracts 3.5x faster; "hog" and "cnn" stay available (docs/results.md).
    detector: str = "blazeface"
    # Live video (test.py): BlazeFace too: on the clip it finds Miranda's far shot, Lacamoire's
    # profile and all four audience faces at frame 240 (HOG at upsample 1: no profile, one
    # audience face) at a fraction of HOG's time. With --detector cnn live runs it at
    # live_cnn_upsample (0), which sees no face under ~80 px (--upsample 1 finds them at ~5x the time).
    live_detector: str = "blazeface"
    live_cnn_upsample: int = 0
    # --detector blazeface: MediaPipe's network (faceid/detect/blazeface.py: short, full or back,
    # or several joined by "+"), its upsample (0: the whole frame once; each step adds a grid of
    # squares twice as fine) and the score a detection needs: MediaPipe's 0.5 for photos (at 0.4,
    # 15 % of LFW photos show several faces instead of 11 %), 0.4 in live video, where a track's vote
    # decides and 0.5 loses Lacamoire's profile in most frames (docs/results.md). "back" (256 px)
    # finds all four audience faces at frame 240 of the clip and Miranda's far shot.
    blazeface_model: str = "back"
    blazeface_upsample: int = 0
    blazeface_min_score: float = 0.5
    live_blazeface_min_score: float = 0.4
    # Live video detects with BlazeFace on every frame: a whole frame (~5 ms) costs less than
    # tracking two faces (~3.7 ms each), and a face it keeps finding is never correlation-tracked.
    blazeface_detect_every: int = 1
    # Still images wider than this are searched for faces downscaled to it (a 12-megapixel
    # phone photo at upsample 1 takes seconds and gigabytes); crops are still cut from the
    # full-size image. Extraction, enrolment, the audit and evaluation share it, so they
    # agree about "no face". Live video uses detect_width instead.
    max_search_width: int = 1600
    # Margin around the landmark-aligned face, as a share of the face size.
    # 0.25 is what dlib's face ResNet was trained with.
    align_padding: float = 0.25

    # --- where artefacts go (every script's default paths) ---------------------------
    extractor_path: str = "models/extractor"
    features_path: str = "features"
    similarity_path: str = "models/similarity"
    faces_path: str = "faces"

    # --- feature extraction ------------------------------------------------------
    # Images per backbone call; larger batches amortise framework overhead.
    batch_size: int = 32
    # Processes that decode, detect and align while the backbone runs: one per
    # core keeps a 2-core machine busy (0 = all in the main process).
    workers: int = min(os.cpu_count() or 1, 4)

    # --- similarity head training (train.py) -------------------------------------
    epochs: int = 15
    # Different-person pairs per same-person pair (the original design's 1.5).
    neg_ratio: float = 1.5
    # Caps one person's same-person pairs: one LFW person with 530 images would
    # otherwise contribute 140k pairs and dominate the loss.
    max_positive_per_person: int = 2000
    # Share of *people* held out for validation and threshold calibration.
    val_people: float = 0.2
    # False-accept rate the decision threshold is calibrated to on held-out people.
    target_far: float = 0.01
    learning_rate: float = 1e-3
    train_batch_size: int = 256
    seed: int = 0

    # --- live identification (test.py, bench.py live) -----------------------------
    # Full-frame detection every N frames; faces are followed by a correlation
    # tracker in between (~3 ms a face against ~70 ms for a 640x360 detection).
    detect_every: int = 5
    # Wider frames are searched downscaled to this width (HD webcams: 4x fewer pixels).
    detect_width: int = 640
    # A tracked face is re-embedded every N frames, or sooner when its box has
    # moved so that the overlap with the last embedded box falls under reid_iou.
    reid_every: int = 10
    reid_iou: float = 0.6
    # Per-track vote: identifications remembered, needed before a name is shown,
    # and how many in a row another name must win to replace the shown one (hysteresis).
    vote_window: int = 9
    min_evidence: int = 2
    switch_margin: int = 2
    # Detection rounds a track survives without being detected (a face turned away
    # for a moment keeps its name); the correlation tracker follows it meanwhile.
    max_missed: int = 2
    # Mean grey-level change (0-255) of a 64x36 thumbnail between consecutive frames
    # that marks a cut to another shot. Measured on the Hamilton clip: its 3 cuts
    # score 28-30, motion within a shot at most 14.
    cut_threshold: float = 20.0

    # --- identification (test.py) ------------------------------------------------
    # Share of strangers (people not enrolled) the decision may give a name to, whatever the
    # number of people enrolled: the threshold is derived for the gallery at load time
    # (faceid/match/openset.py). 0.01: one stranger face in a hundred is named.
    target_fpir: float = 0.01
    # The open-set statistic is best + w * (best - second best person); the calibration picks w
    # for each gallery among these, by the FNIR it predicts at the target FPIR (a second person
    # tells a lot among 1,000 people, little among 2). README: measured per gallery size.
    margin_weights: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
    # Simulated galleries per calibration stranger when deriving a gallery's threshold.
    calibration_replicates: int = 16
    # Per-person score = mean of the k best head scores over that person's vectors:
    # robust to one bad enrolment photo, yet works with a single photo (k capped at n).
    top_k: int = 3
    # The original rule: a person matches when more than vote_share of their vectors
    # score above vote_score.
    vote_score: float = 0.8
    vote_share: float = 0.85

    # --- gallery search (Gallery(shortlist=...), faceid/search.py, bench.py match) ----
    # People the cheap first stage keeps for the similarity head, which then scores only
    # their vectors. At 100k vectors the exhaustive head's top-1 was shortlisted for 200/200
    # real probes with 50 (196/200 with 20, 198/200 with 40); the head on ~250 vectors is
    # most of the ~7 ms per face (bench.py match).
    shortlist: int = 50
    # Dimensions the first stage compares in (PCA of the normalised vectors). A scan is
    # memory-bound: 100k x 128 floats (51 MB) take ~2.5 ms on 2 cores, 2048-d ~20 ms.
    search_dims: int = 128
    # Gallery size (vectors) from which the first stage uses a FAISS inverted-file index
    # instead of an exact NumPy scan: the measured crossover (shortlist 50, 128-d: NumPy
    # 0.7 vs FAISS 1.1 ms at 30k vectors, 2.0 vs 1.6 ms at 60k, 2.5 vs 1.6 ms at 100k).
    faiss_min_vectors: int = 50_000
    # FAISS clusters scanned per face, of ~sqrt(n): more is slower and closer to exact.
    # At 100k (316 clusters) 64 kept every exhaustive top-1 of 200 probes; 16 lost 3.
    faiss_nprobe: int = 64

    # --- clustering the faces nobody enrolled (faceid/cluster/, cluster.py, evaluate.py cluster) ---
    # The default method: average linkage on a nearest-neighbour graph whose join threshold rises with
    # the size of the clusters joined (faceid/cluster/linkage.py). Measured against Chinese Whispers,
    # HDBSCAN, DBSCAN and one-threshold agglomerative linkage in docs/clustering.md.
    cluster_method: str = "linkage"
    # The thresholds are derived from the backbone's open-set calibration, so they mean the same for
    # any backbone: two single faces join when impostor pairs reach their similarity at most this often
    # (dlib's face model: cosine 0.916) ...
    cluster_pair_fmr: float = 5e-3
    # ... and two large clusters only when impostor pairs reach their average this rarely (dlib: 0.935).
    cluster_group_fmr: float = 3e-4
    # Faces per face in the candidate graph: 16 and 32 gave the same clusters on LFW.
    cluster_neighbours: int = 16
    # From this many faces the graph comes from a FAISS HNSW index (approximate: ~96 % of the exact
    # neighbours), not exact NumPy products (n^2 dim: ~30 s at 100k 128-d on 2 cores, HNSW ~12 s).
    cluster_faiss_min_vectors: int = 20_000
    # cluster.py --video_path: faces are detected on every frame and linked into tracks; one track is
    # one face record. Up to cluster_track_faces faces, sampled every cluster_video_every detections and
    # spread over the whole track, are embedded and cropped (naming the cluster enrols them all); the
    # vector of the most typical of them stands for the track (apps/clustering.py: typical_face). Tracks
    # detected in fewer than cluster_min_track frames are dropped: a face seen for a tenth of a second
    # is more often a false detection than a person.
    cluster_video_every: int = 5
    cluster_track_faces: int = 8
    cluster_min_track: int = 3

    # --- faceid serve (faceid/service/) ----------------------------------------------------
    # The service listens on this interface and port; loopback unless told otherwise.
    serve_host: str = "127.0.0.1"
    serve_port: int = 8000
    # A camera whose source fails is opened again after camera_retry_min seconds, then twice as
    # long each time it fails again, at most camera_retry_max.
    camera_retry_min: float = 1.0
    camera_retry_max: float = 30.0
    # An open event is written to the database at most every event_flush_seconds while its track
    # lasts (and at once when its name changes or it ends); its crop is replaced by a face at least
    # event_crop_growth times larger (area).
    event_flush_seconds: float = 2.0
    event_crop_growth: float = 1.3
    # Margin around the face box in an event's crop, as a share of the box side; JPEG quality. 0.6 as
    # the clusters' crops (apps/clustering.py: CLUSTER_CROP): naming an unknown cluster or correcting an
    # event enrols its crop, and the face is found again in 0.6 crops where 0.25 crops lost some.
    event_crop_margin: float = 0.6
    event_crop_quality: int = 90
    # Closed events (their rows and crops) older than this many days are deleted.
    retention_days: float = 30.0
    # Uploads: the largest request body, and the most pixels an image may have (a 413 beyond).
    max_upload_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    # GET /events returns at most this many events per request (default event_page).
    event_page: int = 100
    event_page_max: int = 1000
    # The web page: a sign-in lasts session_hours; a camera's live view is sent at most stream_fps
    # frames a second; naming an unknown cluster enrols its unknown_enrol_faces most typical faces.
    session_hours: float = 12.0
    stream_fps: float = 5.0
    unknown_enrol_faces: int = 8


DEFAULTS = Settings()

# Where a bce-trained tower (train_siamese.py --loss bce) keeps its distance layer inside the extractor
# directory, as a similarity model identification uses by default.
EXTRACTOR_HEAD_DIR = "head"
