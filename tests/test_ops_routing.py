"""Pathway modes route results: shadow → evaluation only, qa → clinical held, clinical → all."""

from __future__ import annotations

import pytest

from integrations.db import ops
from pathways.registry import check_spec
from pathways.routing import route
from pathways.spec import Destination, Review


def _spec(registry, mode: str, review: bool = False, evaluation: bool = True):
    spec = registry.get("heart-failure-cardiac-ct")
    destinations = spec.destinations + ((Destination(name="evaluation", formats=("fhir-bundle",), clinical=False),) if evaluation else ())
    return spec.model_copy(update={"mode": mode, "destinations": destinations, "review": Review(required=review)})


def test_shadow_sends_only_to_evaluation_destinations(registry):
    routing = route(_spec(registry, "shadow"))
    assert routing.send_now == ("evaluation",) and routing.held == ()
    assert set(routing.withheld) == {"pacs", "ris", "ehr"} and not routing.needs_review


def test_qa_holds_every_clinical_destination_for_review(registry):
    routing = route(_spec(registry, "qa"))
    assert routing.send_now == ("evaluation",) and set(routing.held) == {"pacs", "ris", "ehr"}
    assert routing.needs_review and routing.withheld == ()


def test_clinical_sends_the_preliminary_everywhere_and_with_review_follows_it_with_the_decision(registry):
    plain = route(_spec(registry, "clinical"))
    assert set(plain.send_now) == {"pacs", "ris", "ehr", "evaluation"} and not plain.needs_review
    reviewed = route(_spec(registry, "clinical", review=True))
    assert set(reviewed.send_now) == {"pacs", "ris", "ehr", "evaluation"} and reviewed.held == ()
    assert set(reviewed.follow_up) == {"pacs", "ris", "ehr"} and reviewed.needs_review  # never the evaluation one


def test_a_destination_that_takes_only_final_results_is_held_for_review_in_every_clinical_mode(registry):
    """Some trusts want no unreviewed AI output in the EHR: `statuses: [final]`."""
    spec = _spec(registry, "clinical")
    ehr_final_only = spec.model_copy(update={"destinations": tuple(
        d.model_copy(update={"statuses": ("final",)}) if d.name == "ehr" else d for d in spec.destinations)})
    routing = route(ehr_final_only)
    assert set(routing.send_now) == {"pacs", "ris", "evaluation"} and routing.held == ("ehr",) and routing.needs_review
    assert route(ehr_final_only.model_copy(update={"mode": "shadow"})).held == ()  # shadow: still nothing clinical
    with pytest.raises(ValueError, match="must include final"):
        Destination(name="ehr", formats=("fhir-bundle",), statuses=("preliminary",))
    with pytest.raises(ValueError, match="evaluation destination is never reviewed"):
        Destination(name="evaluation", formats=("fhir-bundle",), clinical=False, statuses=("final",))


def test_a_shadow_spec_without_an_evaluation_destination_is_an_error(registry):
    errors = check_spec(_spec(registry, "shadow", evaluation=False))
    assert any("shadow pathway needs an evaluation destination" in e for e in errors)
    assert not any(e.startswith("mode") for e in check_spec(_spec(registry, "shadow")))


def test_mode_changes_are_audited_once_per_change(radpath_env):
    assert ops.audit_spec_modes({"lung-cancer-ct": "shadow"}) == ["lung-cancer-ct"]
    assert ops.audit_spec_modes({"lung-cancer-ct": "shadow"}) == []
    assert ops.audit_spec_modes({"lung-cancer-ct": "clinical"}) == ["lung-cancer-ct"]


@pytest.mark.parametrize(("values", "q", "expected"), [([5, 1, 3, 2, 4], 50, 3), ([5, 1, 3, 2, 4], 90, 5), ([7], 90, 7), ([], 50, None)])
def test_nearest_rank_percentile(values, q, expected):
    assert ops.percentile(values, q) == expected
