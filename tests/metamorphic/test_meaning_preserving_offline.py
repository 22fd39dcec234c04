"""Every meaning-preserving transform, singly and combined, on EVERY shared scenario, through the offline
evaluator: the deciding fields of the decision object must not change (see compare.py for which)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.metamorphic.compare import differences, failure_message
from tests.metamorphic.paths import decide_offline, decide_offline_cli_entry
from tests.metamorphic.scenarios import AS_OF, EXPECTED_OUTCOME, SCENARIO_IDS, scenario_record, seeded
from tests.metamorphic.transforms import MEANING_PRESERVING, Transform, compose

OFFLINE_TRANSFORMS = [t for t in MEANING_PRESERVING if t.offline]
COMBINED_EXAMPLES = 6
# (scenario, transform) pairs where the transform changes the record (a no-op pair would test nothing).
APPLICABLE = [
    pytest.param(scenario_id, transform, id=f"{scenario_id}-{transform.name}")
    for scenario_id in SCENARIO_IDS
    for transform in OFFLINE_TRANSFORMS
    if transform(scenario_record(scenario_id), seeded(scenario_id, transform.name, "single")).resources
    != scenario_record(scenario_id).resources
]  # per scenario: 36 scenarios x 6 combinations, well under a minute


def rotated(transforms: list[Transform], scenario_id: str) -> list[Transform]:
    """The list rotated per scenario: with derandomized draws each scenario gets other combinations."""
    shift = SCENARIO_IDS.index(scenario_id) % len(transforms)
    return transforms[shift:] + transforms[:shift]


def check_unchanged(transform: Transform, scenario_id: str, seed: str) -> None:
    record, as_of = scenario_record(scenario_id), AS_OF[scenario_id]
    baseline = decide_offline(record, as_of)
    assert baseline["outcome"] == EXPECTED_OUTCOME[scenario_id], f"{scenario_id}: baseline changed"
    transformed = transform(record, seeded(scenario_id, transform.name, seed))
    got = decide_offline(transformed, as_of)
    diffs = differences(baseline, got, strict=transform.kind == "syntactic")
    assert not diffs, failure_message(transform.name, scenario_id, "offline", diffs)


@pytest.mark.protocol(
    "3c-medication-reference",
    "3c-statement-doses",
    "3c-panels",
    "3c-comparators",
    "3c-duplicates",
    "3b-dates",
    "3b-icd-category",
    "4-coverage",
)
@pytest.mark.parametrize(("scenario_id", "transform"), APPLICABLE)
def test_single_transform_keeps_the_decision(scenario_id: str, transform: Transform) -> None:
    check_unchanged(transform, scenario_id, "single")


@pytest.mark.protocol("3c-medication-reference", "3c-panels", "3c-comparators", "3c-duplicates", "3b-dates")
@pytest.mark.parametrize("scenario_id", SCENARIO_IDS)
@settings(
    max_examples=COMBINED_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: the message already names the transforms
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data(), seed=st.integers(min_value=0, max_value=10_000))
def test_combined_transforms_keep_the_decision(scenario_id: str, data: st.DataObject, seed: int) -> None:
    pool = rotated(OFFLINE_TRANSFORMS, scenario_id)
    chosen = data.draw(st.lists(st.sampled_from(pool), min_size=2, max_size=4, unique_by=lambda t: t.name))
    check_unchanged(compose(chosen), scenario_id, str(seed))


@pytest.mark.protocol("3b-dates")
@pytest.mark.parametrize("scenario_id", ["s01", "s12", "s28", "s55"])
def test_offline_entry_point_gives_the_same_decision(scenario_id: str) -> None:
    """The sampled runs use evaluate_bundle itself (knowledge reloaded) and agree with the fast path."""
    record = compose(OFFLINE_TRANSFORMS[10:14])(scenario_record(scenario_id), seeded(scenario_id, "cli"))
    fast = decide_offline(record, AS_OF[scenario_id])
    assert decide_offline_cli_entry(record, AS_OF[scenario_id]) == fast


SYNTACTIC_TRANSFORMS = [t for t in OFFLINE_TRANSFORMS if t.kind == "syntactic"]


@pytest.mark.protocol("3b-dates", "3c-duplicates")
@pytest.mark.parametrize("scenario_id", SCENARIO_IDS)
@settings(
    max_examples=COMBINED_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data(), seed=st.integers(min_value=0, max_value=10_000))
def test_combined_encoding_changes_keep_even_the_reasons(
    scenario_id: str, data: st.DataObject, seed: int
) -> None:
    """Encoding-only combinations (datetimes, error twins, noise, order, ids): reasons unchanged too."""
    pool = rotated(SYNTACTIC_TRANSFORMS, scenario_id)
    chosen = data.draw(st.lists(st.sampled_from(pool), min_size=2, max_size=5, unique_by=lambda t: t.name))
    check_unchanged(compose(chosen), scenario_id, str(seed))
