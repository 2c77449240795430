"""The clustering core (faceid/cluster/) on real LFW faces: metrics, methods, incremental additions,
reclustering, merge/split, naming and storage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from faceid.cluster.clusters import CLUSTERS_FILE, VECTORS_FILE, Clustering, FaceRecord
from faceid.cluster.linkage import MergeThresholds, average_linkage, neighbour_graph
from faceid.cluster.methods import METHODS, cluster_labels, merge_thresholds
from faceid.cluster.metrics import clustering_metrics
from faceid.errors import InputError
from faceid.features.cache import FeatureCache
from faceid.io.sealed import new_key


@pytest.fixture(scope="module")
def lfw(lfw_cache_dir, dlib_extractor):
    """40 real LFW people, 4-6 faces each: (vectors, person per face, extractor manifest)."""
    vectors, labels, names = FeatureCache.load(lfw_cache_dir, dlib_extractor.manifest).matrix()
    return vectors, np.array(names)[labels], dlib_extractor.manifest


def records(people) -> list[FaceRecord]:
    return [FaceRecord(source=f"{person}/{index}.jpg", label=str(person)) for index, person in enumerate(people)]


def test_metrics_on_hand_counted_examples():
    truth = ["a", "a", "a", "b", "b"]
    perfect = clustering_metrics([1, 1, 1, 2, 2], truth)
    assert perfect["pairwise_f"] == perfect["bcubed_f"] == 1.0
    assert (perfect["clusters"], perfect["people"], perfect["faces"]) == (2, 2, 5)
    lumped = clustering_metrics([0, 0, 0, 0, 0], truth)
    # 4 of the 10 pairs are same-person pairs, all together: precision 4/10, recall 1.
    assert lumped["pairwise_precision"] == pytest.approx(0.4) and lumped["pairwise_recall"] == 1.0
    # BCubed precision: three faces see 3/5, two see 2/5 -> (3*0.6 + 2*0.4) / 5.
    assert lumped["bcubed_precision"] == pytest.approx(0.52) and lumped["bcubed_recall"] == 1.0
    apart = clustering_metrics([0, 1, 2, 3, 4], truth)
    assert apart["pairwise_recall"] == 0.0 and apart["bcubed_precision"] == 1.0
    assert apart["bcubed_recall"] == pytest.approx((3 * (1 / 3) + 2 * 0.5) / 5)
    with pytest.raises(InputError, match="one label per face"):
        clustering_metrics([0, 1], ["a"])


def test_thresholds_come_from_the_calibration_and_order_as_the_rates(lfw):
    _, _, manifest = lfw
    thresholds = merge_thresholds(manifest)
    # A rarer impostor match needs a higher similarity.
    assert thresholds.group > thresholds.pair
    stricter = merge_thresholds(manifest, pair_fmr=1e-3)
    assert stricter.pair > thresholds.pair
    assert set(thresholds.baselines) == {"chinese-whispers", "dbscan", "agglomerative"}
    with pytest.raises(InputError, match="no cosine open-set calibration"):
        merge_thresholds({**manifest, "fingerprint": "0" * 32})


def test_every_method_groups_real_people(lfw):
    vectors, people, manifest = lfw
    thresholds = merge_thresholds(manifest)
    scores = {}
    for method in METHODS:
        labels = cluster_labels(vectors, method, thresholds=thresholds)
        assert labels.shape == (len(vectors),) and labels.min() >= 0  # noise became singletons, never -1
        scores[method] = clustering_metrics(labels, people)
    default = scores["linkage"]
    assert default["bcubed_f"] > 0.9 and default["pairwise_precision"] > 0.9, default
    # No catch-all cluster: the largest holds one person's faces, at most a few more.
    sizes = np.bincount(np.unique(cluster_labels(vectors, thresholds=thresholds), return_inverse=True)[1])
    assert sizes.max() <= 8


def test_the_neighbour_graph_is_exact_below_the_faiss_size(lfw):
    vectors, _, _ = lfw
    units = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    found, similarity = neighbour_graph(units, 5)
    full = units @ units.T
    np.fill_diagonal(full, -np.inf)
    expected = np.sort(full, axis=1)[:, -5:]
    np.testing.assert_allclose(np.sort(similarity, axis=1), expected, rtol=1e-5)
    assert not (found == np.arange(len(units))[:, None]).any()
    # The FAISS graph (what large sets use) finds nearly the same neighbours, never the face itself.
    approximate, approximate_similarity = neighbour_graph(units, 5, faiss_min_vectors=0)
    assert not (approximate == np.arange(len(units))[:, None]).any()
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(found.tolist(), approximate.tolist())])
    assert overlap > 0.9, overlap
    assert np.all(np.diff(approximate_similarity, axis=1) <= 1e-6)  # best first


def test_faces_far_from_everyone_stay_singletons(lfw):
    vectors, people, manifest = lfw
    thresholds = MergeThresholds(pair=0.9999, group=0.9999)
    labels = average_linkage(vectors, thresholds)
    assert len(np.unique(labels)) == len(vectors)


def test_adding_faces_keeps_the_ids_of_clusters_they_do_not_touch(lfw):
    vectors, people, manifest = lfw
    thresholds = merge_thresholds(manifest)
    names = sorted(set(people))
    first = np.isin(people, names[:30])
    clustering = Clustering.create(vectors[first], records(people[first]), fingerprint=manifest["fingerprint"],
                                   thresholds=thresholds)
    before = {cluster_id: list(cluster.faces) for cluster_id, cluster in clustering.clusters.items()}
    # The last 10 people's faces, plus one more photo of a person already clustered.
    known_person = names[0]
    held_back = np.flatnonzero(people == known_person)[-1:]
    later = np.concatenate([np.flatnonzero(~first), held_back])
    changes = clustering.add(vectors[later], records(people[later]))
    assert changes.created, "10 new people must start new clusters"
    for cluster_id, faces in before.items():
        if cluster_id not in changes.changed:
            assert clustering.clusters[cluster_id].faces == faces
    assert changes.unchanged == len(before) - len(changes.changed)
    # The new people's faces went to new clusters, not into old ones.
    cluster_of = clustering.cluster_of()
    new_faces = [face for face in clustering.faces.values() if face.label in names[30:]]
    assert sum(cluster_of[face.id] in before for face in new_faces) <= 1
    # The extra photo of a known person joined that person's cluster.
    extra = list(clustering.faces)[-1]
    home = {cluster_of[face.id] for face in clustering.faces.values() if face.label == known_person} - {cluster_of[extra]}
    assert cluster_of[extra] in before and (not home or cluster_of[extra] in home)


def test_recluster_keeps_ids_and_names_and_says_what_changed(lfw):
    vectors, people, manifest = lfw
    clustering = Clustering.create(vectors, records(people), fingerprint=manifest["fingerprint"],
                                   thresholds=merge_thresholds(manifest))
    biggest = clustering.ordered()[0]
    clustering.name_cluster(biggest.id, "someone")
    faces = list(biggest.faces)
    changes = clustering.recluster()
    assert changes.unchanged == len(clustering.clusters) and not changes.created and not changes.removed
    assert clustering.clusters[biggest.id].faces == faces and clustering.clusters[biggest.id].name == "someone"
    # A stricter method changes things, and the changes say so.
    changes = clustering.recluster("dbscan")
    assert clustering.method == "dbscan"
    assert sum(len(cluster.faces) for cluster in clustering.clusters.values()) == len(vectors)


def test_merge_and_split(lfw):
    vectors, people, manifest = lfw
    clustering = Clustering.create(vectors, records(people), fingerprint=manifest["fingerprint"],
                                   thresholds=merge_thresholds(manifest))
    first, second = clustering.ordered()[:2]
    size = len(first.faces) + len(second.faces)
    changes = clustering.merge(second.id, first.id)
    assert changes.merged == {first.id: [second.id]} and second.id not in clustering.clusters
    assert len(clustering.clusters[first.id].faces) == size
    # Splitting in two separates the two people again (they were different people).
    changes = clustering.split(first.id)
    new_id = changes.split[first.id][0]
    sides = [{clustering.faces[face].label for face in clustering.clusters[cid].faces} for cid in (first.id, new_id)]
    assert all(len(side) == 1 for side in sides) and sides[0] != sides[1]
    moved = clustering.clusters[new_id].faces[:1]
    clustering.split(new_id, moved) if len(clustering.clusters[new_id].faces) > 1 else None
    with pytest.raises(InputError, match="not in cluster"):
        clustering.split(first.id, ["f999999"])
    with pytest.raises(InputError, match="no cluster"):
        clustering.merge("c9999", first.id)
    clustering.name_cluster(first.id, "a")
    clustering.name_cluster(new_id, "b")
    with pytest.raises(InputError, match="named"):
        clustering.merge(new_id, first.id)


def test_saved_clusterings_are_sealed_and_refuse_another_extractor(lfw, tmp_path):
    vectors, people, manifest = lfw
    clustering = Clustering.create(vectors, records(people), fingerprint=manifest["fingerprint"],
                                   thresholds=merge_thresholds(manifest))
    plain = tmp_path / "plain"
    clustering.save(plain)
    payload = json.loads((plain / CLUSTERS_FILE).read_text())
    assert payload["summary"]["clusters"] == len(clustering.clusters)
    again = Clustering.load(plain, fingerprint=manifest["fingerprint"])
    assert {c.id: c.faces for c in again.clusters.values()} == {c.id: c.faces for c in clustering.clusters.values()}
    np.testing.assert_allclose(again.vectors_of(list(again.faces)), clustering.vectors_of(list(clustering.faces)), atol=1e-6)
    with pytest.raises(InputError, match="another extractor|not this one"):
        Clustering.load(plain, fingerprint="f" * 32)

    key = new_key()
    sealed = tmp_path / "sealed"
    clustering.save(sealed, key=key)
    for name in (CLUSTERS_FILE, VECTORS_FILE):
        data = (sealed / name).read_bytes()
        assert b"George" not in data and b"faces" not in data  # no name, no face list, no array header in the clear
    assert Clustering.load(sealed, key=key).summary() == clustering.summary()
    with pytest.raises(Exception, match="key"):
        Clustering.load(sealed)
    with pytest.raises(Exception, match="key"):
        Clustering.load(sealed, key=new_key())


def test_removed_faces_leave_and_emptied_clusters_go_without_reusing_ids(lfw, tmp_path):
    vectors, people, manifest = lfw
    clustering = Clustering.create(vectors, records(people), fingerprint=manifest["fingerprint"],
                                   thresholds=merge_thresholds(manifest))
    first, second = clustering.ordered()[:2]
    first_faces, second_faces = list(first.faces), list(second.faces)
    kept = first_faces[1:]
    next_face, next_cluster = clustering._next_face, clustering._next_cluster
    changes = clustering.remove(first_faces[:1] + second_faces)
    assert changes.removed == [second.id]
    assert changes.changed == {first.id: {"added": 0, "removed": 1}}
    assert changes.unchanged == len(clustering.clusters) - 1
    assert clustering.clusters[first.id].faces == kept and clustering.clusters[first.id].representative in kept
    assert len(clustering.faces) == len(people) - 1 - len(second_faces)
    # each remaining face keeps its own vector (create numbered the faces in record order)
    for face in kept:
        row = int(face[1:]) - 1
        np.testing.assert_allclose(clustering.vectors_of([face])[0], vectors[row] / np.linalg.norm(vectors[row]),
                                   atol=1e-5)
    with pytest.raises(InputError, match="not in this clustering"):
        clustering.remove(second_faces[:1])
    clustering.save(tmp_path)
    again = Clustering.load(tmp_path, fingerprint=manifest["fingerprint"])
    assert {c.id: c.faces for c in again.clusters.values()} == {c.id: c.faces for c in clustering.clusters.values()}
    # the faces come back as new faces in a new cluster: no id is given twice
    second_rows = [int(face[1:]) - 1 for face in second_faces]
    added = again.add(vectors[second_rows], [records(people)[row] for row in second_rows])
    assert added.created and all(int(cluster_id[1:]) >= next_cluster for cluster_id in added.created)
    assert all(int(face[1:]) >= next_face for cluster_id in added.created for face in again.clusters[cluster_id].faces)
