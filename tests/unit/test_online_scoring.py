"""The online endpoint's scoring of JSON rows (`ServedModel`), without Ray: the batch job's scores and top
features for good rows, in request order, and a reason instead of a score for each row that cannot be scored."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipelines.runtime.batch_inference import feature_baseline, top_features
from pipelines.runtime.online_scoring import ServedModel
from tests.unit.tabular_models import mixed_table, train_detector
from vae import ConfigError


@pytest.fixture(scope="module")
def served() -> tuple[ServedModel, pd.DataFrame]:
    table = mixed_table(400)
    detector = train_detector(table, conditional=True, epochs=5)
    detector.calibrate(detector.score(table)[0])
    return ServedModel.of(detector, "mixed/3"), pd.DataFrame(table)


def _json_rows(frame: pd.DataFrame) -> list[dict]:
    """Rows as a client sends them: JSON numbers and strings."""
    return json.loads(frame.to_json(orient="records"))


def test_good_rows_get_the_detectors_scores_flags_and_top_features_in_order(served):
    model, frame = served
    rows = frame.iloc[:20]
    results = model.score(_json_rows(rows), top=2, quarantine_unseen=False)

    scores, contributions = model.detector.score(rows)
    order, shares = top_features(contributions, feature_baseline(model.detector), 2)
    assert [r["reason"] for r in results] == [None] * 20
    np.testing.assert_allclose([r["score"] for r in results], scores, rtol=1e-6)
    assert [r["is_anomaly"] for r in results] == (scores > model.threshold).tolist()
    names = model.detector.feature_names
    assert [[name for name, _ in r["top_features"]] for r in results] == [[names[i] for i in row] for row in order]
    np.testing.assert_allclose([[share for _, share in r["top_features"]] for r in results], shares, rtol=1e-6)


def test_each_unusable_row_gets_its_reason_and_the_others_their_scores(served):
    model, frame = served
    good = _json_rows(frame.iloc[:3])
    rows = [
        good[0],
        {**good[1], "income": "a lot"},  # not a number
        [1, 2, 3],  # not an object
        {k: v for k, v in good[2].items() if k != "age"},  # a column left out
        {**good[2], "income": 1e300},  # beyond the training range
        {**good[2], "colour": "purple"},  # an unseen category: scored in the unknown bucket
        good[2],
        {**good[0], "income": 10**400},  # a JSON integer no float holds: failed the whole request
    ]
    results = model.score(rows, top=3, quarantine_unseen=False)

    assert [r["reason"] for r in results] == [
        None, "income is not a number", "the row is not a JSON object", "age is not in the row",
        "income is out of the training range", None, None, "income is beyond the range of a float",
    ]  # fmt: skip
    for result in (results[1], results[2], results[3], results[4], results[7]):
        assert result["score"] is None and result["is_anomaly"] is None and result["top_features"] is None
    alone = model.score([good[0], good[2]], top=3, quarantine_unseen=False)
    assert results[0]["score"] == pytest.approx(alone[0]["score"], rel=1e-6)
    assert results[6]["score"] == pytest.approx(alone[1]["score"], rel=1e-6)
    assert results[5]["score"] != pytest.approx(results[6]["score"])

    strict = model.score([rows[5]], top=3, quarantine_unseen=True)
    assert strict[0]["reason"] == "colour has an unseen category" and strict[0]["score"] is None


def test_a_category_of_a_json_type_its_labels_cannot_be_is_set_aside_as_the_batch_job_refuses_it(served):
    """The batch job refuses such a column before scoring; here it was scored in the unknown bucket and flagged."""
    model, frame = served
    good = _json_rows(frame.iloc[:1])[0]
    rows = [{**good, "colour": 3}, {**good, "colour": True}, {**good, "colour": ["red"]},
            {**good, "grade": {"grade": 2}}, {**good, "grade": "2"}, {**good, "grade": 2.0}]  # fmt: skip
    results = model.score(rows, top=2, quarantine_unseen=False)
    text = "here, but its training labels are text (blue, green, red): every value would be a category never seen"
    nested = "is a list or an object here, a type no category is read from: write the column as text or numbers"
    reasons = [r["reason"] for r in results]
    assert reasons[0].startswith(f"colour is a number {text}") and reasons[1].startswith(f"colour is true/false {text}")
    assert reasons[2].startswith(f"colour {nested}") and reasons[3].startswith(f"grade {nested}")
    assert all(r["score"] is None for r in results[:4])
    assert reasons[4:] == [None, None] and results[4]["score"] == pytest.approx(results[5]["score"])  # "2" is 2


def test_a_large_request_is_scored_in_bounded_model_batches_with_the_same_scores(served, monkeypatch):
    from pipelines.runtime import online_scoring

    model, frame = served
    rows = _json_rows(pd.concat([frame] * 3, ignore_index=True))  # 1,200 rows
    whole = [r["score"] for r in model.score(rows, top=1, quarantine_unseen=False)]
    calls = []
    original = model.detector.score
    monkeypatch.setattr(model.detector, "score", lambda table, **kw: calls.append(kw) or original(table, **kw))
    monkeypatch.setattr(online_scoring, "SCORE_BATCH", 500)
    batched = [r["score"] for r in model.score(rows, top=1, quarantine_unseen=False)]
    assert calls == [{"batch_size": 500}]
    np.testing.assert_allclose(batched, whole, rtol=1e-6)


def test_a_model_without_a_threshold_cannot_serve():
    detector = train_detector(mixed_table(200), epochs=1)
    with pytest.raises(ConfigError, match="no calibrated threshold"):
        ServedModel.of(detector, "mixed/1")


def test_a_null_value_is_scored_without_its_feature_as_the_library_scores_it(served):
    model, frame = served
    row = _json_rows(frame.iloc[:1])[0] | {"age": None}
    (result,) = model.score([row], top=3, quarantine_unseen=False)
    expected, contributions = model.detector.score(frame.iloc[:1].assign(age=np.nan))
    assert result["reason"] is None and result["score"] == pytest.approx(expected[0], rel=1e-6)
    age = model.detector.feature_names.index("age")
    assert contributions[0, age] == 0 and "age" not in [name for name, share in result["top_features"] if share]
