"""Text items: short UTF-8 texts stored as assets (kind "text") and added to a project for labelling."""

from __future__ import annotations

import hashlib

from django.db import IntegrityError, transaction

from crucible.core.errors import ValidationFailed
from crucible.core.models import Project, User
from crucible.core.selectors import require_write
from crucible.core.services import audit
from curation.labels import LabelChange, asset_labels_set
from curation.models import Asset, ProjectAsset
from curation.services import AssetWriter

MAX_TEXT_CHARS = 10_000
MAX_TEXTS = 10_000  # one request


def text_storage_name(sha256: str) -> str:
    """Where a text's bytes are stored, by content (a file of its own, beside the image assets)."""
    return f"assets/{sha256[:2]}/{sha256}.txt"


def text_assets_add(*, project: Project, user: User, texts: list[str], labels: list[str] | None = None) -> list[int]:
    """Add texts to the project as text assets; returns their project asset ids (see text_assets_import)."""
    return text_assets_import(project=project, user=user, texts=texts, labels=labels)[0]


def text_assets_import(
    *, project: Project, user: User, texts: list[str], labels: list[str] | None = None
) -> tuple[list[int], int]:
    """Add texts to the project as text assets; returns their project asset ids, one per text, in order,
    and how many project assets were new.

    Each text is stored once by the sha256 of its UTF-8 bytes: the same text again (in this call or a
    later one) gives the same asset and the same project asset. `labels`, when given, is one label per
    text ("" for none) and is set only on project assets this call created. Nothing is written when
    any text is refused.
    """
    require_write(user=user, project=project)
    errors: dict[str, str] = {}
    if not isinstance(texts, list) or not texts:
        raise ValidationFailed("texts: at least one text", code="invalid_texts", fields={"texts": "at least one"})
    if len(texts) > MAX_TEXTS:
        raise ValidationFailed(
            f"at most {MAX_TEXTS} texts a request", code="invalid_texts", fields={"texts": f"at most {MAX_TEXTS}"}
        )
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            errors[f"texts[{i}]"] = "a non-empty string"
        elif len(text) > MAX_TEXT_CHARS:
            errors[f"texts[{i}]"] = f"{len(text)} characters; at most {MAX_TEXT_CHARS}"
    if labels is not None:
        if not isinstance(labels, list) or len(labels) != len(texts):
            errors["labels"] = "one label per text"
        else:
            for i, label in enumerate(labels):
                if not isinstance(label, str) or len(label) > 200:
                    errors[f"labels[{i}]"] = "a string of at most 200 characters"
    if errors:
        first = next(iter(errors.items()))
        raise ValidationFailed(f"{first[0]}: {first[1]}", code="invalid_texts", fields=errors)

    data = [text.encode("utf-8") for text in texts]
    shas = [hashlib.sha256(d).hexdigest() for d in data]
    writer = AssetWriter()
    # Files first, so that no row ever points at a missing file (a file left by a failed call is
    # simply found again next time: its name is its content's hash).
    for sha, d in dict(zip(shas, data, strict=True)).items():
        if not Asset.objects.filter(sha256=sha).exists():
            writer.write(text_storage_name(sha), d)
    with transaction.atomic():
        ids: dict[str, int] = {}
        for sha, d in dict(zip(shas, data, strict=True)).items():
            asset = Asset.objects.filter(sha256=sha).first()
            if asset is None:
                try:
                    with transaction.atomic():
                        asset = Asset.objects.create(
                            sha256=sha,
                            kind=Asset.Kind.TEXT,
                            storage_name=text_storage_name(sha),
                            size_bytes=len(d),
                            width=0,
                            height=0,
                            mode="text",
                            format="TEXT",
                        )
                except IntegrityError:  # stored meanwhile by another request
                    asset = Asset.objects.get(sha256=sha)
            ids[sha] = asset.pk
        existing = dict(
            ProjectAsset.objects.filter(project=project, asset_id__in=list(ids.values())).values_list("asset_id", "pk")
        )
        created: dict[int, int] = {}
        pa_ids: list[int] = []
        for i, sha in enumerate(shas):
            asset_id = ids[sha]
            if asset_id not in existing:
                pa, new = ProjectAsset.objects.get_or_create(project=project, asset_id=asset_id)
                existing[asset_id] = pa.pk
                if new:
                    created[pa.pk] = i
            pa_ids.append(existing[asset_id])
        if labels is not None:
            changes = [LabelChange(project_asset_id=pk, label=labels[i].strip()) for pk, i in created.items()]
            asset_labels_set(changes=[c for c in changes if c.label], actor=user, via="import")
        audit(actor=user, project=project, verb="texts.add", target=project.name, created=len(created))
    return pa_ids, len(created)
