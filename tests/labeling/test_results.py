"""The pure result rules: validation per schema kind, consensus, gold matching and box geometry."""

import pytest

from labeling import results
from labeling.results import ResultError, consensus, iou, match_boxes, matches_gold, per_class_gold, validate_result

NAMES = ["cat", "dog", "bird"]


def box(label, x, y, w, h):
    return {"label": label, "x": x, "y": y, "w": w, "h": h}


def test_single_label_is_validated_and_unknown_classes_refused():
    assert validate_result("single_label", {"label": "cat"}, NAMES, 28, 28) == {"label": "cat"}
    with pytest.raises(ResultError) as exc:
        validate_result("single_label", {"label": "cow"}, NAMES, 28, 28)
    assert exc.value.code == "unknown_class"
    with pytest.raises(ResultError) as exc:
        validate_result("single_label", {"labels": ["cat"]}, NAMES, 28, 28)
    assert exc.value.code == "invalid_result"


def test_multi_label_is_sorted_and_duplicates_refused():
    assert validate_result("multi_label", {"labels": ["dog", "cat"]}, NAMES, 0, 0, item_kind="text") == {
        "labels": ["cat", "dog"]
    }
    assert validate_result("multi_label", {"labels": []}, NAMES, 28, 28) == {"labels": []}
    with pytest.raises(ResultError, match="twice"):
        validate_result("multi_label", {"labels": ["cat", "cat"]}, NAMES, 28, 28)


def test_boxes_must_lie_inside_the_image_and_have_area():
    ok = validate_result("boxes", {"boxes": [box("cat", 0, 0, 28, 28)]}, NAMES, 28, 28)
    assert ok == {"boxes": [box("cat", 0.0, 0.0, 28.0, 28.0)]}
    for bad in (box("cat", 10, 10, 20, 5), box("cat", -1, 0, 5, 5)):
        with pytest.raises(ResultError) as exc:
            validate_result("boxes", {"boxes": [bad]}, NAMES, 28, 28)
        assert exc.value.code == "box_outside_image"
    with pytest.raises(ResultError) as exc:
        validate_result("boxes", {"boxes": [box("cat", 1, 1, 0, 5)]}, NAMES, 28, 28)
    assert exc.value.code == "invalid_result"
    with pytest.raises(ResultError) as exc:
        validate_result("boxes", {"boxes": [{**box("cat", 1, 1, 2, 2), "x": "1"}]}, NAMES, 28, 28)
    assert exc.value.code == "invalid_result"
    # A text has no pixels to box.
    with pytest.raises(ResultError) as exc:
        validate_result("boxes", {"boxes": []}, NAMES, 0, 0, item_kind="text")
    assert exc.value.code == "invalid_result"


def test_single_and_multi_consensus_need_a_strict_majority():
    assert consensus("single_label", [{"label": "cat"}, {"label": "cat"}, {"label": "dog"}]) == {"label": "cat"}
    assert consensus("single_label", [{"label": "cat"}, {"label": "dog"}]) is None
    votes = [{"labels": ["cat", "dog"]}, {"labels": ["cat"]}, {"labels": ["cat", "bird"]}]
    assert consensus("multi_label", votes) == {"labels": ["cat"]}
    assert consensus("multi_label", [{"labels": ["cat"]}, {"labels": []}]) is None
    assert consensus("multi_label", [{"labels": []}, {"labels": []}]) == {"labels": []}


def test_box_consensus_averages_majority_clusters_and_drops_minorities():
    a = {"boxes": [box("cat", 0, 0, 10, 10), box("dog", 20, 20, 5, 5)]}
    b = {"boxes": [box("cat", 1, 1, 10, 10)]}
    c = {"boxes": [box("cat", 0, 0, 11, 11)]}
    decided = consensus("boxes", [a, b, c])
    assert decided is not None and len(decided["boxes"]) == 1  # the lone dog is dropped
    cat = decided["boxes"][0]
    assert (
        cat["label"] == "cat"
        and cat["x"] == pytest.approx(1 / 3, abs=0.01)
        and cat["w"] == pytest.approx(31 / 3, abs=0.01)
    )
    # Backed by exactly half of two annotators: a tie.
    assert consensus("boxes", [a, b]) is None
    assert consensus("boxes", [{"boxes": []}, {"boxes": []}, b]) == {"boxes": []}


def test_iou_and_matching_pair_boxes_of_one_class_only():
    assert iou(box("a", 0, 0, 10, 10), box("a", 0, 0, 10, 10)) == 1.0
    assert iou(box("a", 0, 0, 10, 10), box("a", 5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou(box("a", 0, 0, 1, 1), box("a", 5, 5, 1, 1)) == 0.0
    left = [box("cat", 0, 0, 10, 10), box("dog", 50, 50, 10, 10), box("cat", 100, 100, 10, 10)]
    right = [box("cat", 101, 100, 10, 10), box("cat", 1, 0, 10, 10), box("cat", 50, 50, 10, 10)]
    assert [(i, j) for i, j, _ in match_boxes(left, right)] == [(0, 1), (2, 0)]


def test_gold_matching_per_kind_and_per_class():
    assert matches_gold("single_label", {"label": "cat"}, {"label": "cat"})
    assert not matches_gold("multi_label", {"labels": ["cat"]}, {"labels": ["cat", "dog"]})
    assert per_class_gold("multi_label", {"labels": ["cat"]}, {"labels": ["cat", "dog"]}) == {"cat": True, "dog": False}
    gold = {"boxes": [box("cat", 0, 0, 10, 10)]}
    assert matches_gold("boxes", {"boxes": [box("cat", 1, 1, 10, 10)]}, gold)
    assert not matches_gold("boxes", {"boxes": [box("cat", 1, 1, 10, 10), box("dog", 0, 0, 3, 3)]}, gold)
    assert per_class_gold("single_label", {"label": "dog"}, {"label": "cat"}) == {"cat": False, "dog": False}


def test_renaming_rewrites_every_kind():
    mapping = {"cat": "feline", "dog": None}
    assert results.rename_classes("single_label", {"label": "cat"}, mapping) == {"label": "feline"}
    assert results.rename_classes("single_label", {"label": "dog"}, mapping) is None
    assert results.rename_classes("multi_label", {"labels": ["cat", "dog", "bird"]}, mapping) == {
        "labels": ["bird", "feline"]
    }
    out = results.rename_classes("boxes", {"boxes": [box("dog", 0, 0, 1, 1), box("cat", 0, 0, 2, 2)]}, mapping)
    assert out == {"boxes": [box("feline", 0, 0, 2, 2)]}
