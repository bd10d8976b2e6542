"""Results out to a real FHIR R4 server on loopback: once only, findable, corrections in place,
valid against the official R4 JSON schema; what the client raises (one try, the server's words
kept, the outbox schedules retries); SMART Backend Services."""

from __future__ import annotations

import json
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from integrations.settings import get_settings
from integrations.delivery.config import FhirDestination
from integrations.delivery.fhir import deliver_bundles, report_references
from integrations.delivery.send import send
from integrations.errors import PermanentError, TransientError, is_transient
from integrations.fhir.client import FhirClient, FhirRejected, RetryLater, retry_after_seconds
from integrations.fhir.report import RESULT_SYSTEM, build_report_bundle
from integrations.fhir.smart import SmartBackendAuth, jwk_thumbprint, public_jwk
from tests.fhir_server import fhir_schema_validator, start_fhir_server
from tests.test_outputs import assessment, content, ctx  # noqa: F401 - shared fixtures
from tests.conftest import make_ready

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_fhir_server(tmp_path_factory.mktemp("fhir"))
    yield srv
    srv.stop()


def write_bundle(tmp_path, bundle, name="report-bundle.json"):
    path = tmp_path / name
    path.write_text(json.dumps(bundle))
    return str(path)


def search_reports(server, result_id):
    return httpx.get(f"{server.base_url}/DiagnosticReport",
                     params={"identifier": f"{RESULT_SYSTEM}|{result_id}"}).json()


@pytest.mark.parametrize("status", ["preliminary", "final", "corrected", "amended", "entered-in-error"])
def test_every_resource_sent_is_valid_fhir_r4(content, ctx, status):  # noqa: F811
    reviewer = "Dr Ada Reviewer" if status in ("final", "corrected", "amended") else None
    bundle = build_report_bundle(content, ctx, status=status, interpreter=reviewer)
    validator = fhir_schema_validator()
    validator.validate_resource(bundle)  # the Bundle and each entry's resource on its own
    (report,) = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]
    assert report["status"] == status
    # The algorithm as a Device (DICOM Device UID and model sha256), the author in a Provenance
    # that targets the report and every observation; a reviewer, where there is one, the verifier.
    (device,) = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Device"]
    assert {i["system"] for i in device["resource"]["identifier"]} >= {"urn:dicom:uid"}
    assert device["resource"]["deviceName"][0]["name"] == ctx.model_name
    assert device["resource"]["version"] == [{"value": ctx.model_version}]
    (provenance,) = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Provenance"]
    targets = {t["reference"] for t in provenance["target"]}
    assert targets == {e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] in ("DiagnosticReport", "Observation")}
    assert provenance["agent"][0]["who"]["reference"] == device["fullUrl"]
    assert [a["type"]["coding"][0]["code"] for a in provenance["agent"]] == ["author"] + (["verifier"] if reviewer else [])
    observations = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    assert observations and {o["status"] for o in observations} == {status}
    quantities = [o["valueQuantity"] for o in observations if "valueQuantity" in o]
    assert quantities and all(q["system"] == "http://unitsofmeasure.org" for q in quantities)


def test_schema_check_catches_invalid_r4():
    bad = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueQuantity": {"value": "3"}}
    with pytest.raises(AssertionError, match="valueQuantity"):
        fhir_schema_validator().validate_resource(bad)


def test_report_is_created_once_when_the_delivery_is_replayed(server, content, ctx, tmp_path):  # noqa: F811
    payload = write_bundle(tmp_path, build_report_bundle(content, ctx))
    config = FhirDestination(base_url=server.base_url)
    first = send("ehr", config, "key-1", [payload])
    again = send("ehr", config, "key-1", [payload])
    assert " created" in first and report_references(first) == report_references(again)
    assert "existing" in again and "(0 created)" in again
    found = search_reports(server, ctx.result_id)
    assert found["total"] == 1
    report = found["entry"][0]["resource"]
    assert f"DiagnosticReport/{report['id']}" == report_references(first)[0]
    observations = httpx.get(f"{server.base_url}/Observation", params={"subject": report["subject"]["reference"],
                                                                       "_count": "100"}).json()
    assert observations["total"] == len(report["result"]) + sum(
        len(e["resource"].get("hasMember", [])) for e in observations["entry"])
    patients = httpx.get(f"{server.base_url}/Patient",
                         params={"identifier": f"https://fhir.nhs.uk/Id/nhs-number|{ctx.patient.nhs_number}"}).json()
    assert patients["total"] == 1


def test_final_and_correction_update_the_same_report(server, content, ctx, tmp_path):  # noqa: F811
    """The life cycle at a real FHIR server: the preliminary is created, the reviewer's final
    replaces it in place (same resource, resultsInterpreter named), a correction and a
    withdrawal likewise."""
    config = FhirDestination(base_url=server.base_url)
    first = deliver_bundles(config, "k", [write_bundle(tmp_path, build_report_bundle(content, ctx), "a.json")])
    assert search_reports(server, ctx.result_id)["entry"][0]["resource"]["status"] == "preliminary"
    final = build_report_bundle(content, ctx, status="final", interpreter="Dr Ada Reviewer", update=True)
    finalised = deliver_bundles(config, "k1", [write_bundle(tmp_path, final, "f.json")])
    assert report_references(first) == report_references(finalised)
    found = search_reports(server, ctx.result_id)
    assert found["total"] == 1 and found["entry"][0]["resource"]["status"] == "final"
    assert found["entry"][0]["resource"]["resultsInterpreter"] == [{"display": "Dr Ada Reviewer"}]
    corrected = deliver_bundles(config, "k2", [write_bundle(
        tmp_path, build_report_bundle(content, ctx, status="corrected", interpreter="Dr Ada Reviewer"), "b.json")])
    assert report_references(first) == report_references(corrected)
    found = search_reports(server, ctx.result_id)
    assert found["total"] == 1 and found["entry"][0]["resource"]["status"] == "corrected"
    withdrawn = build_report_bundle(content, ctx, status="entered-in-error")
    deliver_bundles(config, "k3", [write_bundle(tmp_path, withdrawn, "c.json")])
    assert search_reports(server, ctx.result_id)["entry"][0]["resource"]["status"] == "entered-in-error"


def test_server_rejection_is_permanent_and_keeps_the_outcome(server, tmp_path):
    broken = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Observation", "status": "final"},  # code is required
         "request": {"method": "POST", "url": "Observation"}}]}
    with pytest.raises(FhirRejected) as err:
        deliver_bundles(FhirDestination(base_url=server.base_url), "k", [write_bundle(tmp_path, broken)])
    assert 400 <= err.value.status < 500 and err.value.outcome["resourceType"] == "OperationOutcome"
    assert not is_transient(err.value)
    assert err.value.peer["http_status"] == err.value.status and err.value.peer["outcome"]  # the server's words


def test_unreachable_server_is_transient(tmp_path, content, ctx):  # noqa: F811
    from integrations.fhir.local_server import free_port

    config = FhirDestination(base_url=f"http://127.0.0.1:{free_port()}/fhir", connect_timeout_s=1)
    with pytest.raises(TransientError):
        deliver_bundles(config, "k", [write_bundle(tmp_path, build_report_bundle(content, ctx))])


# --- one try, the answer classified (httpx MockTransport: failures a real server will not
# produce on demand; the outbox's schedule is tested in tests/test_retry_schedule.py and
# against a real server in tests/test_outbox_retry.py) -------------------------------------

def scripted(*answers):
    calls = []

    def handler(request):
        calls.append(request)
        answer = answers[min(len(calls), len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handler), calls


@pytest.mark.parametrize("answer,status,retry_after", [
    (httpx.ConnectError("refused"), None, None),
    (httpx.ReadTimeout("slow"), None, None),
    (httpx.Response(429, headers={"Retry-After": "7"}), 429, 7.0),
    (httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"}), 503, "date"),
    (httpx.Response(502), 502, None),
])
def test_transient_answers_are_tried_once_and_carry_status_and_retry_after(answer, status, retry_after):
    transport, calls = scripted(answer)
    client = FhirClient("https://ehr.example/fhir", transport=transport)
    with pytest.raises(RetryLater) as err:
        client.transaction({"resourceType": "Bundle"})
    assert len(calls) == 1 and is_transient(err.value) and err.value.status == status
    if retry_after == "date":
        assert err.value.retry_after > 86400 and err.value.peer["retry_after_s"] == err.value.retry_after
    else:
        assert err.value.retry_after == retry_after
    assert calls[0].url == "https://ehr.example/fhir" and calls[0].headers["content-type"] == "application/fhir+json"


def test_success_returns_the_transaction_response():
    transport, calls = scripted(httpx.Response(200, json={"resourceType": "Bundle", "type": "transaction-response"}))
    client = FhirClient("https://ehr.example/fhir", transport=transport)
    assert client.transaction({"resourceType": "Bundle"})["type"] == "transaction-response" and len(calls) == 1


def test_4xx_is_not_retried_and_identifiers_are_masked():
    outcome = {"resourceType": "OperationOutcome", "issue": [{
        "severity": "error", "code": "invalid", "expression": ["Patient.identifier"],
        "diagnostics": "Patient 9434765919 already linked"}]}
    transport, calls = scripted(httpx.Response(422, json=outcome))
    client = FhirClient("https://ehr.example/fhir", transport=transport)
    with pytest.raises(FhirRejected) as err:
        client.transaction({})
    assert len(calls) == 1 and isinstance(err.value, PermanentError)
    assert "9434765919" not in str(err.value) and "Patient.identifier" in str(err.value)
    assert err.value.peer == {"http_status": 422, "outcome": ["error invalid Patient.identifier Patient # already linked"]}


def test_retry_after_http_date():
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after_seconds("soon") is None


def test_tls_verification_is_on_by_default():
    assert FhirDestination(base_url="https://ehr.example/fhir").verify_tls is True
    with pytest.raises(ValueError, match="smart"):
        FhirDestination(base_url="https://ehr.example/fhir", auth="smart", client_id="radpath")


# --- SMART Backend Services against the server's token endpoint -----------------------------

def _key_files(tmp_path, alg):
    key = rsa.generate_private_key(65537, 2048) if alg == "RS384" else ec.generate_private_key(ec.SECP384R1())
    private = tmp_path / f"radpath-{alg}.pem"
    public = tmp_path / f"radpath-{alg}.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return key, private, public


@pytest.fixture(scope="module")
def smart_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smart")
    keys = {alg: _key_files(tmp, alg) for alg in ("RS384", "ES384")}
    clients = [{"client_id": f"radpath-{alg.lower()}", "public_key_path": str(pub), "scopes": "system/*.cruds"}
               for alg, (_, _, pub) in keys.items()]
    srv = start_fhir_server(tmp / "server", smart_clients=clients)
    srv.keys = keys
    yield srv
    srv.stop()


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_smart_delivery_with_cached_token(smart_server, content, ctx, tmp_path, alg):  # noqa: F811
    _, private, _ = smart_server.keys[alg]
    config = FhirDestination(base_url=smart_server.base_url, auth="smart", client_id=f"radpath-{alg.lower()}",
                             token_url=smart_server.token_url, private_key_path=private, alg=alg,
                             scope="system/*.cruds")
    payload = write_bundle(tmp_path, build_report_bundle(content, ctx))
    assert httpx.post(smart_server.base_url, json={}).status_code == 401  # the server does demand a token
    first = send("ehr", config, "k", [payload])
    second = send("ehr", config, "k", [payload])
    assert report_references(first) == report_references(second)
    from integrations.delivery.fhir import auth_for

    auth = auth_for(config)
    assert auth.tokens_fetched == 1  # cached across deliveries
    assert "PRIVATE" not in repr(auth) and auth.access_token() not in repr(auth)


def test_smart_assertion_claims_and_refresh(smart_server, tmp_path):
    key, private, _ = smart_server.keys["RS384"]
    auth = SmartBackendAuth(client_id="radpath-rs384", token_url=smart_server.token_url, private_key_path=private,
                            alg="RS384", scope="system/*.rs")
    one, two = auth.client_assertion(), auth.client_assertion()
    header = jwt.get_unverified_header(one)
    claims = jwt.decode(one, key.public_key(), algorithms=["RS384"], audience=smart_server.token_url)
    assert header["kid"] == jwk_thumbprint(public_jwk(key)) and header["alg"] == "RS384"
    assert claims["iss"] == claims["sub"] == "radpath-rs384"
    assert 0 < claims["exp"] - time.time() <= 300
    assert claims["jti"] != jwt.decode(two, options={"verify_signature": False})["jti"]
    token = auth.access_token()
    assert auth.access_token() == token and auth.tokens_fetched == 1
    auth.invalidate()  # as after a 401: a new assertion (new jti) is accepted
    auth.access_token()
    assert auth.tokens_fetched == 2


def _token_request(server, assertion):
    return httpx.post(server.token_url, data={
        "grant_type": "client_credentials", "scope": "system/*.rs",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion})


def test_token_endpoint_verifies_signature_audience_expiry_and_jti(smart_server, tmp_path):
    """The peer really checks what our client must get right (so the tests above can fail)."""
    key, _, _ = smart_server.keys["RS384"]
    now = int(time.time())

    def assertion(**changes):
        claims = {"iss": "radpath-rs384", "sub": "radpath-rs384", "aud": smart_server.token_url,
                  "exp": now + 120, "jti": f"jti-{time.monotonic_ns()}"} | changes
        return jwt.encode(claims, key, algorithm="RS384")

    good = assertion()
    assert _token_request(smart_server, good).status_code == 200
    assert _token_request(smart_server, good).status_code == 401  # same jti replayed
    assert _token_request(smart_server, assertion(aud="https://elsewhere/token")).status_code == 401
    assert _token_request(smart_server, assertion(exp=now - 60)).status_code == 401
    assert _token_request(smart_server, assertion(exp=now + 3600)).status_code == 401
    other = rsa.generate_private_key(65537, 2048)
    forged = jwt.encode(jwt.decode(assertion(), options={"verify_signature": False}), other, algorithm="RS384")
    assert _token_request(smart_server, forged).status_code == 401


def test_smart_with_unregistered_key_is_permanent(smart_server, tmp_path):
    _, private, _ = _key_files(tmp_path, "RS384")
    auth = SmartBackendAuth(client_id="radpath-rs384", token_url=smart_server.token_url, private_key_path=private,
                            alg="RS384", scope="system/*.rs")
    with pytest.raises(PermanentError, match="refused") as err:
        auth.access_token()
    assert "BEGIN" not in str(err.value)


def test_outbox_row_delivered_to_fhir_records_the_report_id(radpath_env, registry, server, content, tmp_path):  # noqa: F811
    """An order from FHIR, a result built from the ledger's context, delivered through send()."""
    from integrations.db import ledger
    from integrations.db.engine import session_scope
    from integrations.db.models import Study
    from integrations.delivery.fhir import delivered_reports
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from integrations.fhir.api import fhir_router
    from tests.test_fhir_intake import post, service_request

    app = FastAPI()  # the order comes in through the FHIR front door
    app.include_router(fhir_router(registry, settings=get_settings()), prefix="/fhir")
    with TestClient(app) as client:
        assert post(client, service_request()).status_code == 201
    uid = "1.2.826.0.1.3680043.8.498.77"
    with session_scope() as s:
        s.add(Study(study_uid=uid, accession_number="ACC00001", patient_key="P-x"))
    (run_id,) = make_ready(uid, registry)
    result_id = ledger.result_id_for(uid, "lung_cancer_ct", "0.1.0")
    result_ctx = ledger.result_context(run_id, result_id=result_id, model_name="m", model_version="0.1.0",
                                       source_series_uid=uid + ".1")
    bundle = build_report_bundle(content, result_ctx)
    fhir_schema_validator().validate_resource(bundle)
    payload = write_bundle(tmp_path, bundle)
    _, (delivery_id,), _ = ledger.record_result(
        run_id, result_id=result_id, study_uid=uid, pathway="lung_cancer_ct", model_version="0.1.0",
        assessment={}, report={}, urgent=False,
        deliveries=[ledger.DeliveryPlan(destination="ehr", kind="fhir", payloads=[payload])])
    receipt = send("ehr", FhirDestination(base_url=server.base_url), ledger.get_delivery(delivery_id).idempotency_key,
                   [payload])
    ledger.record_delivery_attempt(delivery_id, ok=True, response=receipt)
    [(destination, reference)] = delivered_reports()
    assert destination == "ehr" and httpx.get(f"{server.base_url}/{reference}").json()["status"] == "preliminary"


def test_an_urgent_result_queues_one_stat_task_for_its_order(server, content, ctx, tmp_path):  # noqa: F811
    """The EHR's way to put an urgent exam first (`priority_update = "task"`): a Task, code
    fulfill, focus the ServiceRequest by its placer number, priority stat, citing the AI report;
    valid R4, and created once however often the delivery is replayed."""
    from integrations.fhir.report import validate_r4

    bundle = build_report_bundle(content, ctx, priority_task="stat")
    validate_r4(bundle)
    fhir_schema_validator().validate_resource(bundle)
    assert all(e["resource"]["resourceType"] != "Task" for e in build_report_bundle(content, ctx)["entry"])
    payload = write_bundle(tmp_path, bundle)
    config = FhirDestination(base_url=server.base_url, priority_update="task")
    for _ in range(2):
        send("ehr", config, "key-task", [payload])
    found = httpx.get(f"{server.base_url}/Task", params={"identifier": f"{RESULT_SYSTEM}|{ctx.result_id}/priority"}).json()
    assert found["total"] == 1
    task = found["entry"][0]["resource"]
    assert (task["status"], task["intent"], task["priority"]) == ("requested", "order", "stat")
    assert task["focus"]["identifier"]["value"] == ctx.placer_order_number
    (report,) = [e["resource"] for e in search_reports(server, ctx.result_id)["entry"]]
    assert task["reasonReference"]["reference"] == f"DiagnosticReport/{report['id']}"
    assert task["for"] == report["subject"]
    with pytest.raises(ValueError, match="raises the priority"):
        build_report_bundle(content, ctx, priority_task="routine")
