import json

from labeling import services
from tests.cli.conftest import one_error_line
from tests.labeling.conftest import CLASSES, add_assets


def test_queue_status_counts_open_and_done_items(cli, project, admin_user, annotator):
    services.label_schema_set(project=project, user=admin_user, classes=CLASSES)
    add_assets(project, 4)
    services.queue_items_add(project=project, user=admin_user)
    lease = services.lease_claim_next(project=project, annotator=annotator)[0]
    services.annotation_submit(
        item_id=lease.item_id, annotator=annotator, result={"label": "cat"}, time_spent_ms=900, idempotency_key="k1"
    )

    result = cli("--json", "queue", "status", project.name)
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["items"] == {"open": 3, "done": 1}
    assert status["submissions"] == 1

    text = cli("queue", "status", project.name).output
    assert "OPEN" in text and "SUBMISSIONS" in text


def test_queue_status_of_an_unknown_project_is_one_line(cli):
    assert "not found" in one_error_line(cli("queue", "status", "nope"))
