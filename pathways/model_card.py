"""A model's card, read by the pathway: where the model may be used, and what a plausible answer is.

Each model folder holds `card.yaml` beside its ONNX file (MODEL_CARD.md is the prose for
people; this is the part a pathway checks). Input outside the declared domain, or an output
outside its physiological range, makes the pathway end "not measurable" with the reason,
never a clinical conclusion (hazard H-05, docs/clinical-safety/hazard-log.md).

Pure: no I/O beyond `load_card`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

CARD_FILE = "card.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Strict):
    """A closed interval with its unit and the source that justifies it."""

    min: float | None = None
    max: float | None = None
    unit: str
    source: str = Field(min_length=1, description="citation, or how the bound was chosen")

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min is None and self.max is None:
            raise ValueError("a range needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    def outside(self, value: float) -> bool:
        return (self.min is not None and value < self.min) or (self.max is not None and value > self.max)

    def text(self) -> str:
        if self.min is None:
            return f"at most {self.max:g} {self.unit}"
        if self.max is None:
            return f"at least {self.min:g} {self.unit}"
        return f"{self.min:g}–{self.max:g} {self.unit}"


class InputDomain(_Strict):
    """What the model was built and validated for; an unset bound is not checked."""

    modalities: tuple[str, ...] = Field(min_length=1)
    voxel_spacing_mm: Range | None = None  # every axis of a volume, or a cine's pixel size
    matrix: Range | None = None  # rows and columns
    slices: Range | None = None  # volume slices
    frames: Range | None = None  # cine frames
    age_years: Range | None = None


class ModelCard(_Strict):
    model: str = Field(description="the model name the spec uses")
    # What real patient data the model was validated on; None: synthetic phantoms only.
    real_data_validation: str | None = None
    input_domain: InputDomain
    outputs: dict[str, Range] = Field(default_factory=dict, description="physiological range per output")


def load_card(path: Path) -> ModelCard:
    """Parse one card.yaml; raises pydantic.ValidationError, yaml.YAMLError or OSError."""
    return ModelCard.model_validate(yaml.safe_load(path.read_text()))


def input_problems(
    card: ModelCard,
    *,
    modality: str,
    spacing_mm: Sequence[float] = (),
    matrix: Sequence[int] = (),
    slices: int | None = None,
    frames: int | None = None,
    age_years: float | None = None,
) -> list[str]:
    """Why this input is outside the card's domain (empty: inside). An unknown age is not a problem
    (the order may not carry one); every other value given is checked."""
    domain, problems = card.input_domain, []
    if modality not in domain.modalities:
        problems.append(f"modality {modality} is not one the model was built for ({', '.join(domain.modalities)})")
    checks: list[tuple[str, Range | None, Sequence[float]]] = [
        ("voxel spacing", domain.voxel_spacing_mm, spacing_mm),
        ("matrix", domain.matrix, matrix),
        ("slice count", domain.slices, () if slices is None else (slices,)),
        ("frame count", domain.frames, () if frames is None else (frames,)),
        ("patient age", domain.age_years, () if age_years is None else (age_years,)),
    ]
    for what, bounds, values in checks:
        bad = [v for v in values if bounds is not None and bounds.outside(float(v))]
        if bad:
            shown = ", ".join(f"{v:g}" for v in bad)
            problems.append(f"{what} {shown} is outside the model's input domain ({bounds.text()})")
    return problems


def output_problems(card: ModelCard, measured: Mapping[str, float | Sequence[float] | None]) -> list[str]:
    """Why a model's answer is implausible (empty: plausible). A value may be a number or a
    sequence (every element is checked, e.g. each nodule's size); None is not measured."""
    problems = []
    for name, bounds in card.outputs.items():
        value = measured.get(name)
        values = () if value is None else (value,) if isinstance(value, (int, float)) else tuple(value)
        bad = [v for v in values if bounds.outside(float(v))]
        if bad:
            shown = ", ".join(f"{v:.4g}" for v in bad[:3]) + (" …" if len(bad) > 3 else "")
            problems.append(f"{name.replace('_', ' ')} {shown} is outside the physiological range ({bounds.text()})")
    return problems
