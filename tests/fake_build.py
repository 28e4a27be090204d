"""A build directory's records for tests that need one without training or building.

Cards and records are typed and validated when read (nb2prod_runtime.card,
nb2prod.builddir), so a test that fakes a build directory writes them through
here instead of hand-made dicts.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from nb2prod.builddir import BuildDir
from nb2prod.models import ImageRecord, PushRecord
from nb2prod.runtime.card import CARD_FILE, GOLDEN_FILE, GoldenSet, ModelCard
from nb2prod.runtime.plan import Bindings, FunctionStep, NoStep, ServingPlan

#: A function-style plan, as training completes it: predict(model, features), no preprocess.
BASE_PLAN = ServingPlan(
    preprocess=NoStep(),
    predict=FunctionStep(cells=(1,), params=("model", "features")),
    bindings=Bindings(features="features", predict_args=(("model", "model"),), state=("model",)),
)

#: A small card: two numeric columns and a label output.
BASE_CARD = ModelCard(
    name="model",
    model_version="v1",
    nb2prod_version="test",
    notebook={"path": "model.ipynb", "sha256": "0" * 64},
    trained_in="host",
    trained_at="2026-01-01T00:00:00Z",
    training_seconds=0.0,
    python="3.11",
    parameters={},
    metrics={},
    seeds={},
    libraries={},
    data_fingerprint={"sha256": "0" * 64, "rows": 1, "columns": 2},
    input_schema={
        "columns": [
            {"name": "a", "dtype": "float64", "kind": "number", "nullable": False},
            {"name": "b", "dtype": "float64", "kind": "number", "nullable": False},
        ],
        "ignored_columns": [],
    },
    output={"kind": "label"},
    serving=BASE_PLAN,
)


def make_card(**fields: Any) -> ModelCard:
    """``BASE_CARD`` with some fields replaced, e.g. ``make_card(name="iris")``."""
    return replace(BASE_CARD, **fields)


def write_model_dir(
    build_dir: Path, card: ModelCard | None = None, golden: GoldenSet | None = None
) -> Path:
    """Write ``build_dir/model/`` with a card and a golden set (no state); return model/."""
    model_dir = build_dir / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    card = card or BASE_CARD
    golden = golden or GoldenSet(rows=[{"a": 1.0, "b": 2.0}], predictions=[0])
    (model_dir / CARD_FILE).write_text(json.dumps(card.to_json(), indent=2))
    (model_dir / GOLDEN_FILE).write_text(json.dumps(golden.to_json(), indent=2))
    return model_dir


def write_image_record(build_dir: Path, tag: str, image_id: str) -> ImageRecord:
    """``.nb2prod/image.json`` as ``nb2prod build`` leaves it."""
    record = ImageRecord(
        image_id=image_id,
        tags=[tag],
        size_bytes=1,
        base_image="python:3.11-slim",
        built_at="2026-01-01T00:00:00+00:00",
        seconds=0.0,
    )
    BuildDir(build_dir).write_image(record)
    return record


#: The image id write_built_dir records (its push record names the same image).
BUILT_IMAGE_ID = "sha256:" + "11" * 32


def write_built_dir(directory: Path, pushed_as: str | None = None) -> Path:
    """``iris_classifier`` built (card, golden set, image record) into ``directory``, and pushed
    as ``pushed_as`` (REPO@sha256:...) when given: what deploy and its tests start from."""
    write_model_dir(directory, make_card(name="iris_classifier", model_version="3f2a9c1b0d7e"))
    write_image_record(directory, "iris_classifier:3f2a9c1b0d7e", BUILT_IMAGE_ID)
    if pushed_as is not None:
        write_push_record(directory, pushed_as, BUILT_IMAGE_ID)
    return directory


def write_push_record(build_dir: Path, image: str, image_id: str) -> PushRecord:
    """``.nb2prod/push.json`` as ``nb2prod push`` leaves it; ``image`` is REPO@sha256:..."""
    repository, digest = image.split("@", 1)
    record = PushRecord(
        registry=repository.rsplit("/", 1)[0],
        repository=repository,
        tag="v1",
        digest=digest,
        image=image,
        image_id=image_id,
    )
    BuildDir(build_dir).write_push(record)
    return record
