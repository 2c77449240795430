"""Clustering the faces nobody enrolled: group unknown faces so a person can name a whole group at once.

- `metrics.py`: pairwise and BCubed precision, recall and F of a clustering against known identities.
- `linkage.py`: the default method, average linkage over a k-nearest-neighbour graph, its merge
  threshold rising with the size of the clusters it joins.
- `methods.py`: every method by name (the default and the baselines: Chinese Whispers, HDBSCAN, DBSCAN,
  plain agglomerative) and the thresholds derived from the backbone's open-set calibration.
- `clusters.py`: `Clustering`, the clusters of a set of faces with stable ids: incremental additions, a full
  recluster that says what changed, merge, split, naming; saved as ``clusters.json`` + ``vectors.npz``.
"""
