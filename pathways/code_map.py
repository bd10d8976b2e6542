"""A trust's procedure-code map: the codes its RIS or EHR orders with → the concepts pathways claim.

Pathway specs claim standard concepts (SNOMED CT). Many NHS RISs order with NICIP short codes
(the National Interim Clinical Imaging Procedure code set: six letters, modality first) or
with codes of their own (HL7 v2 OBR-4.3 "L" or "99xxx", or a FHIR system URI). A trust keeps
one YAML file that maps those to the standard concepts, per sender where codes differ between
systems, each entry naming where the mapping comes from: for NICIP, the NICIP to SNOMED CT map
NHS England publishes on TRUD; for a local code, the RIS's procedure dictionary.

An order keeps the code it was sent with (the ORU^R01 echoes it in OBR-4); pathway matching
and the DICOM SR's procedure use the standard concept. `radpath pathways validate` checks the
map together with the specs. Pure: no I/O beyond reading the file.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from pathways.code_checks import is_snomed_concept_id
from pathways.codes import SNOMED, as_fhir_system
from pathways.report import Code

CODE_MAP = Path(__file__).with_name("code_map.yaml")  # the shipped default (no mappings)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OrderedCode(_Strict):
    """A code as orders carry it: an HL7 v2 coding system name ("L", "99RIS"), a FHIR system URI,
    or "" for a RIS that sends OBR-4 without naming a coding system."""

    system: str = ""
    code: str = Field(min_length=1)


class CodeMapping(_Strict):
    ordered: OrderedCode
    means: Code  # the standard concept (a FHIR system URI), as a pathway spec claims it
    senders: tuple[str, ...] = ()  # "MSH-3^MSH-4" (FHIR: "<client>^FHIR"); empty: every sender
    source: str = Field(min_length=1)  # where the mapping comes from


class CodeMap(_Strict):
    mappings: tuple[CodeMapping, ...] = ()

    def standard(self, system: str, code: str, sender: str = "") -> Code | None:
        """The standard concept an ordered code means, or None. A sender's own entry wins over
        an entry for every sender."""
        wanted = (as_fhir_system(system.strip()), code.strip())
        best = None
        for mapping in self.mappings:
            if (as_fhir_system(mapping.ordered.system), mapping.ordered.code) != wanted:
                continue
            if sender and sender in mapping.senders:
                return mapping.means
            if not mapping.senders:
                best = mapping.means
        return best

    def problems(self) -> list[str]:
        """Entries that cannot be right, whatever the specs say."""
        errors, seen = [], set()
        for i, mapping in enumerate(self.mappings):
            where = f"mappings[{i}] ({mapping.ordered.system} {mapping.ordered.code})"
            if as_fhir_system(mapping.means.system) == SNOMED and not is_snomed_concept_id(mapping.means.code):
                errors.append(f"{where}: {mapping.means.code} is not a valid SNOMED CT concept id")
            key = (as_fhir_system(mapping.ordered.system), mapping.ordered.code)
            for sender in mapping.senders or ("",):
                if (key, sender) in seen:
                    errors.append(f"{where}: mapped twice for {'sender ' + sender if sender else 'every sender'}")
                seen.add((key, sender))
        return errors


def load_code_map(path: Path) -> CodeMap:
    """Parse a code map file; raises pydantic.ValidationError or yaml.YAMLError."""
    return CodeMap.model_validate(yaml.safe_load(path.read_text()) or {})
