"""Agreement between annotators (labeling.agreement): hand-computed figures, the API and the CLI."""

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from crucible.core.models import Role
from labeling import agreement, services
from labeling.models import Annotation, LabelSchema, QueueItem
from tests.cli.conftest import anon_cli, cli, config_file, one_error_line  # noqa: F401 (fixtures)
from tests.labeling.conftest import CLASSES, add_assets

# Wikipedia's worked example of Fleiss' kappa: 10 items, 14 raters, 5 categories; kappa 0.210.
WIKIPEDIA_FLEISS = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def single(labels: list[str]) -> dict[int, dict]:
    return {rater: {"label": label} for rater, label in enumerate(labels)}


def box(label: str, x: float, y: float, w: float, h: float) -> dict:
    return {"label": label, "x": x, "y": y, "w": w, "h": h}


def test_fleiss_kappa_of_the_wikipedia_example():
    items = []
    for counts in WIKIPEDIA_FLEISS:
        labels = [f"c{j}" for j, n in enumerate(counts) for _ in range(n)]
        items.append(single(labels))
    out = agreement.agreement("single_label", items)
    assert out["fleiss_kappa"] == pytest.approx(0.210, abs=5e-4)
    assert out["fleiss_items"] == 10 and out["items"] == 10 and out["annotators"] == 14
    # With the same raters on every item, percent agreement is Fleiss' mean P (0.378 in the example).
    assert out["percent"] == pytest.approx(0.378, abs=5e-4)
    assert len(out["pairs"]) == 14 * 13 // 2
    assert out["boxes"] is None


def test_cohen_kappa_of_two_annotators():
    # Wikipedia's example: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> p_o 0.7, p_e 0.5, kappa 0.4.
    pairs = [("yes", "yes")] * 20 + [("yes", "no")] * 5 + [("no", "yes")] * 10 + [("no", "no")] * 15
    items = [{7: {"label": a}, 9: {"label": b}} for a, b in pairs]
    out = agreement.agreement("single_label", items, names={7: "ann", 9: "bea"})
    assert out["percent"] == pytest.approx(0.7)
    [pair] = out["pairs"]
    assert (pair["a"], pair["a_name"], pair["b"], pair["b_name"], pair["items"]) == (7, "ann", 9, "bea", 50)
    assert pair["percent"] == pytest.approx(0.7)
    assert pair["cohen_kappa"] == pytest.approx(0.4)
    # Two raters: Fleiss' kappa is Scott's pi, p_e from the pooled answers (0.55, 0.45) = 0.505.
    assert out["fleiss_kappa"] == pytest.approx((0.7 - 0.505) / (1 - 0.505))


def test_fleiss_uses_the_most_common_number_of_raters():
    items = [
        single(["a", "a", "b"]),
        single(["a", "a", "a"]),
        single(["b", "b"]),
        single(["a", "b"]),
        single(["a", "b"]),
        single(["x"]),  # one annotator: not compared at all
    ]
    out = agreement.agreement("single_label", items)
    assert out["items"] == 5 and out["fleiss_items"] == 3  # three items with two raters
    # Pairs: item 1: 3 pairs, 1 agreeing; item 2: 3 of 3; item 3: 1 of 1; items 4, 5: 0 of 1 each.
    assert out["percent"] == pytest.approx(5 / 9)
    # On a tie the larger number of raters is used.
    out = agreement.agreement("single_label", items[:4])
    assert out["fleiss_items"] == 2


def test_unanimous_answers_give_full_agreement_and_undefined_kappas():
    items = [single(["cat", "cat"]), single(["cat", "cat"])]
    out = agreement.agreement("single_label", items)
    assert out["percent"] == 1.0
    assert out["fleiss_kappa"] is None and out["pairs"][0]["cohen_kappa"] is None


def test_multi_label_averages_per_class_agreement():
    a = [["cat"], ["cat", "dog"], [], ["dog"]]
    b = [["cat"], ["cat"], ["dog"], ["dog"]]
    items = [{1: {"labels": x}, 2: {"labels": y}} for x, y in zip(a, b, strict=True)]
    out = agreement.agreement("multi_label", items)
    # cat: 4 of 4 agree, kappa 1; dog: 2 of 4 agree, p_e 0.5 so kappa 0. Means over the two classes.
    assert out["percent"] == pytest.approx(0.75)
    assert out["pairs"][0]["cohen_kappa"] == pytest.approx(0.5)
    assert out["fleiss_kappa"] == pytest.approx(0.5)


def test_boxes_are_matched_by_class_and_iou():
    items = [
        # cat boxes overlap with IoU 0.5 (matched); the dog boxes do not overlap.
        {
            1: {"boxes": [box("cat", 0, 0, 10, 10), box("dog", 20, 20, 10, 10)]},
            2: {"boxes": [box("cat", 0, 0, 10, 5), box("dog", 40, 40, 5, 5)]},
        },
        {1: {"boxes": []}, 2: {"boxes": []}},  # nothing to box: agreement
        {1: {"boxes": [box("cat", 0, 0, 10, 10)]}, 2: {"boxes": [box("dog", 0, 0, 10, 10)]}},  # other class
    ]
    out = agreement.agreement("boxes", items)
    assert out["percent"] == pytest.approx(1 / 3)
    assert out["boxes"] == {"mean_iou": pytest.approx(0.5), "f1": pytest.approx(2 * 1 / 6)}
    [pair] = out["pairs"]
    assert pair["mean_iou"] == pytest.approx(0.5) and pair["f1"] == pytest.approx(1 / 3)
    assert out["fleiss_kappa"] is None and pair["cohen_kappa"] is None


def test_box_matching_is_one_to_one_and_optimal():
    # Greedy matching would take a1-b1 (IoU 0.67) and leave a2, b2 unmatched; the assignment matches both.
    a = [box("cat", 3, 0, 10, 10), box("cat", 8, 0, 10, 10)]
    b = [box("cat", 5, 0, 10, 10), box("cat", 0, 0, 10, 10)]
    matches = agreement.match_boxes_optimal(a, b)
    assert sorted((i, j) for i, j, _ in matches) == [(0, 1), (1, 0)]
    assert all(iou == pytest.approx(7 / 13) for *_, iou in matches)
    assert agreement.match_boxes_optimal(a[:1], a[:1] * 2) == [(0, 0, 1.0)]  # a box matches once


def test_items_from_rows_keeps_the_latest_revision():
    rows = [(1, 5, {"label": "cat"}), (1, 6, {"label": "dog"}), (1, 5, {"label": "dog"}), (2, 5, {"label": "x"})]
    assert list(agreement.items_from_rows(rows)) == [{5: {"label": "dog"}, 6: {"label": "dog"}}, {5: {"label": "x"}}]


def test_nothing_to_compare():
    out = agreement.agreement("single_label", [single(["cat"])])
    assert out["items"] == 0 and out["percent"] is None and out["pairs"] == [] and out["fleiss_kappa"] is None


# -- the API ------------------------------------------------------------------------------------------


def _annotate(item, user, result, key, **fields):
    return Annotation.objects.create(
        item=item, annotator=user, result=result, time_spent_ms=1000, idempotency_key=key, **fields
    )


@pytest.fixture
def labelled(project, engineer, member):
    """Four items with two annotators each (ann and bea agree on three), plus what must not count."""
    services.label_schema_set(project=project, user=engineer, classes=CLASSES)
    add_assets(project, 6)
    services.queue_items_add(project=project, user=engineer, required_annotations=2)
    items = list(QueueItem.objects.filter(project=project).order_by("pk"))
    ann, bea, cid = (member(project, Role.ANNOTATOR, n) for n in ("ann", "bea", "cid"))
    for i, (x, y) in enumerate([("cat", "cat"), ("dog", "dog"), ("cat", "cat"), ("cat", "dog")]):
        _annotate(items[i], ann, {"label": x}, f"a{i}")
        _annotate(items[i], bea, {"label": y}, f"b{i}")
    # bea's answer on item 3 was rejected and revised to "cat": the revision counts.
    first = Annotation.objects.get(item=items[3], annotator=bea)
    Annotation.objects.filter(pk=first.pk).update(status="rejected")
    _annotate(items[3], bea, {"label": "cat"}, "b3r", revision_of=first)
    # An undone answer, and a gold item, do not count.
    _annotate(items[4], ann, {"label": "cat"}, "a4")
    _annotate(items[4], cid, {"label": "dog"}, "c4", status="withdrawn")
    QueueItem.objects.filter(pk=items[5].pk).update(is_gold=True, gold_result={"label": "cat"})
    _annotate(items[5], ann, {"label": "cat"}, "a5", is_gold=True, gold_correct=True)
    _annotate(items[5], cid, {"label": "dog"}, "c5", is_gold=True, gold_correct=False)
    return project


def test_agreement_api_counts_latest_answers_of_ordinary_items(api, labelled, engineer):
    resp = api(engineer).get(f"/api/v1/projects/{labelled.name}/agreement/")
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert (body["kind"], body["items"], body["annotators"]) == ("single_label", 4, 2)
    assert body["percent"] == 1.0  # the revision turned the only disagreement into agreement
    [pair] = body["pairs"]
    assert (pair["a_name"], pair["b_name"], pair["items"], pair["percent"]) == ("ann", "bea", 4, 1.0)
    assert pair["cohen_kappa"] == pytest.approx(1.0)
    assert body["fleiss_kappa"] == pytest.approx(1.0) and body["fleiss_items"] == 4
    assert body["boxes"] is None


def test_agreement_api_for_reviewers_not_annotators(api, labelled, member):
    assert (
        api(member(labelled, Role.REVIEWER, "rev")).get(f"/api/v1/projects/{labelled.pk}/agreement/").status_code == 200
    )
    resp = api(labelled.memberships.get(user__username="ann").user).get(f"/api/v1/projects/{labelled.pk}/agreement/")
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "forbidden"


def test_agreement_api_of_a_box_project(api, project, engineer, member):
    LabelSchema.objects.create(project=project, kind="boxes")
    add_assets(project, 1)
    services.queue_items_add(project=project, user=engineer, required_annotations=2)
    item = QueueItem.objects.get(project=project)
    a, b = member(project, Role.ANNOTATOR, "a"), member(project, Role.ANNOTATOR, "b")
    _annotate(item, a, {"boxes": [box("cat", 0, 0, 10, 10)]}, "a")
    _annotate(item, b, {"boxes": [box("cat", 0, 0, 10, 8), box("cat", 15, 15, 5, 5)]}, "b")
    body = api(engineer).get(f"/api/v1/projects/{project.name}/agreement/").json()
    assert body["kind"] == "boxes" and body["percent"] == 0.0
    assert body["boxes"] == {"mean_iou": pytest.approx(0.8), "f1": pytest.approx(2 / 3)}
    assert body["pairs"][0]["f1"] == pytest.approx(2 / 3) and body["fleiss_kappa"] is None


def test_agreement_queries_do_not_grow_with_items(labelled, engineer, member):
    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            agreement.project_agreement(project=labelled, user=engineer)
        return len(ctx.captured_queries)

    before = queries()
    more = add_assets(labelled, 20, start=100)
    services.queue_items_add(project=labelled, user=engineer, project_asset_ids=more, required_annotations=3)
    extra = [member(labelled, Role.ANNOTATOR, f"x{i}") for i in range(3)]
    for item in QueueItem.objects.filter(project_asset_id__in=more):
        for user in extra:
            _annotate(item, user, {"label": "dog"}, f"{item.pk}-{user.pk}")
    assert agreement.project_agreement(project=labelled, user=engineer)["items"] == 24
    assert queries() == before


def test_cli_prints_the_agreement_table(cli, labelled):  # noqa: F811
    result = cli("labels", "agreement", labelled.name)
    assert result.exit_code == 0, result.output
    assert "4 items with two or more annotators, 2 annotators" in result.output
    assert "agreement 100.00%" in result.output and "Fleiss' kappa 1.000" in result.output
    assert "COHEN KAPPA" in result.output
    assert any(line.split()[:3] == ["ann", "bea", "4"] for line in result.output.splitlines())
    data = json.loads(cli("--json", "labels", "agreement", labelled.name).output)
    assert data["items"] == 4


def test_cli_agreement_of_an_unknown_project_is_one_line(cli):  # noqa: F811
    assert "not found" in one_error_line(cli("labels", "agreement", "nope"))
