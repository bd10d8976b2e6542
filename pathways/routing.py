"""Where a pathway's result goes, by mode and review policy (pure; no I/O).

- `shadow`: the pathway runs and records its result, but only evaluation destinations
  (`clinical: false`) receive it; clinical destinations get nothing, not even a held row.
- `qa`: evaluation destinations receive it now; clinical ones are held for review.
- `clinical`: every destination receives it now. Where the spec requires review, each
  clinical destination that takes preliminary results gets the preliminary now and then
  what the reviewer decides (`follow_up`): the final (accept, amend) or a cancellation
  (reject), superseding the preliminary at that destination.
- A destination whose `statuses` exclude "preliminary" is held for review in qa and
  clinical mode alike: it receives only the final a named reviewer accepted.

What is sent now is preliminary (pathways.result_status); what a review releases is final.
"""

from __future__ import annotations

from dataclasses import dataclass

from pathways.spec import PathwaySpec


@dataclass(frozen=True)
class Routing:
    send_now: tuple[str, ...]  # destinations delivered as soon as the result is recorded
    held: tuple[str, ...]  # destinations whose rows wait for a review decision
    withheld: tuple[str, ...]  # clinical destinations a shadow pathway never sends to
    follow_up: tuple[str, ...] = ()  # sent the preliminary now, then the review's final or cancellation

    @property
    def needs_review(self) -> bool:
        return bool(self.held or self.follow_up)

    @property
    def planned(self) -> tuple[str, ...]:
        """Destinations that get an outbox row (sent now or held)."""
        return self.send_now + self.held


def route(spec: PathwaySpec) -> Routing:
    evaluation = tuple(d.name for d in spec.destinations if not d.clinical)
    clinical = tuple(d.name for d in spec.destinations if d.clinical)
    if spec.mode == "shadow":
        return Routing(send_now=evaluation, held=(), withheld=clinical)
    if spec.mode == "qa":
        return Routing(send_now=evaluation, held=clinical, withheld=())
    final_only = tuple(d.name for d in spec.destinations if d.clinical and d.final_only)
    preliminary = tuple(d for d in clinical if d not in final_only)
    follow_up = preliminary if spec.review.required else ()
    return Routing(send_now=evaluation + preliminary, held=final_only, withheld=(), follow_up=follow_up)
