"""FHIR ServiceRequest intake: parsing, the HTTP front door, one order across both doors (the real
HTTP router and the real MLLP listener), conflicts refused, cancellation."""

from __future__ import annotations

from contextlib import contextmanager

import copy
import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import select

from integrations.db.engine import session_scope
from integrations.db.models import AuditEvent, InboundMessage, Order, PathwayRun
from integrations.fhir.api import fhir_router
from integrations.fhir.servicerequest import FhirInputError, parse_service_request
from integrations.hl7.orders import parse_order
from integrations.settings import get_settings, reset_settings
from tests.fhir_server import fhir_schema_validator
from tests.hl7_fixtures import ThreadedListener, err, msa
from tests.hl7_fixtures import order as hl7_order
from tests.test_ledger import ORDER as HL7_ORDER

NHS = "9434765919"  # valid modulus-11, used by the HL7 tests too
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def service_request(**changes) -> dict:
    """A UK Core style ServiceRequest for the same order as tests.test_ledger.ORDER."""
    resource = {
        "resourceType": "ServiceRequest",
        "id": "sr-1",
        "contained": [{
            "resourceType": "Patient",
            "id": "pat",
            "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": NHS}],
            "name": [{"use": "official", "family": "SMITH", "given": ["JANE"]}],
            "gender": "female",
            "birthDate": "1958-03-12",
        }],
        "identifier": [
            {"type": {"coding": [{"system": V2_0203, "code": "PLAC"}]}, "system": "https://trust.example/placer",
             "value": "PL123"},
            {"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]}, "system": "https://trust.example/accession",
             "value": "ACC00001"},
        ],
        "requisition": {"system": "https://trust.example/requisition", "value": "REQ-9"},
        "status": "active",
        "intent": "order",
        "priority": "urgent",
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "363679005", "display": "Imaging"}]}],
        "code": {"coding": [
            {"system": "http://snomed.info/sct", "code": "169069000", "display": "Computed tomography of chest"},
            {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT", "display": "Computed Tomography"},
        ]},
        "subject": {"reference": "#pat"},
        "reasonCode": [{"text": "Incidental nodule on chest X-ray"}],
    }
    resource.update(changes)
    return resource


# --- parsing -----------------------------------------------------------------------------

def test_service_request_reads_like_the_hl7_order():
    fhir = parse_service_request(service_request(), client="epic")
    hl7 = parse_order(HL7_ORDER)
    for name in ("placer_order_number", "accession_number", "nhs_number", "procedure_code", "modality",
                 "family_name", "given_name", "birth_date", "sex"):
        assert getattr(fhir, name) == getattr(hl7, name), name
    assert fhir.procedure_system == "http://snomed.info/sct"
    assert (fhir.priority, fhir.clinical_indication, fhir.order_control) == ("urgent", "Incidental nodule on chest X-ray", "NW")
    assert (fhir.protocol, fhir.sender) == ("fhir", "epic^FHIR")
    assert fhir.placer_system == "https://trust.example/placer"  # for the report's basedOn


def test_without_a_plac_identifier_the_order_is_known_by_its_own_identifier_never_the_requisition():
    """A requisition is a group id several ServiceRequests share: never one order's identity."""
    resource = service_request()
    resource["identifier"] = resource["identifier"][1:]  # no PLAC identifier
    order = parse_service_request(resource, client="epic")
    assert (order.placer_order_number, order.placer_system) == ("sr-1", "")  # its resource id
    resource["identifier"].append({"system": "https://ehr.example/orders", "value": "ORD-77"})
    order = parse_service_request(resource, client="epic")
    assert (order.placer_order_number, order.placer_system) == ("ORD-77", "https://ehr.example/orders")


def test_identifier_reference_without_patient_resource_is_enough():
    resource = service_request(subject={"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": NHS}})
    del resource["contained"]
    order = parse_service_request(resource, client="epic")
    assert order.nhs_number == NHS and order.birth_date is None


@pytest.mark.parametrize(
    ("changes", "status", "expression"),
    [
        ({"status": "banana"}, 400, "ServiceRequest.status"),  # not in the R4 request-status value set
        ({"intent": "proposal"}, 422, "ServiceRequest.intent"),
        ({"identifier": [], "requisition": None}, 422, "ServiceRequest.identifier"),
        ({"code": {"text": "CT chest"}}, 422, "ServiceRequest.code"),
        ({"subject": {"reference": "Patient/elsewhere"}}, 422, "ServiceRequest.subject"),
        ({"status": "draft"}, 422, "ServiceRequest.status"),
    ],
)
def test_bad_requests_name_the_element(changes, status, expression):
    resource = {k: v for k, v in service_request(**changes).items() if v is not None}
    with pytest.raises(FhirInputError) as err:
        parse_service_request(resource, client="epic")
    assert (err.value.status, err.value.expression) == (status, expression)
    assert str(err.value).startswith(expression)


def test_invalid_nhs_number_is_refused_without_echoing_it():
    resource = service_request()
    resource["contained"][0]["identifier"][0]["value"] = "9434765918"  # check digit wrong
    with pytest.raises(FhirInputError) as err:
        parse_service_request(resource, client="epic")
    assert err.value.expression == "Patient.identifier" and "943476591" not in str(err.value)


# --- the HTTP front door -----------------------------------------------------------------

@contextmanager
def fhir_api(registry):
    """The FHIR router on the settings as they are now (it reads none of its own)."""
    committed, cancelled = [], []
    app = FastAPI()
    app.include_router(fhir_router(registry, settings=get_settings(), on_order_committed=committed.append,
                                   on_order_cancelled=cancelled.append), prefix="/fhir")
    with TestClient(app) as client:
        client.committed, client.cancelled = committed, cancelled
        yield client


@pytest.fixture
def api(radpath_env, registry):
    with fhir_api(registry) as client:
        yield client


def post(client, resource, **headers):
    return client.post("/fhir/ServiceRequest", content=json.dumps(resource),
                       headers={"Content-Type": "application/fhir+json", **headers})


def test_order_is_committed_before_201_and_a_resend_is_200(api):
    first = post(api, service_request())
    assert first.status_code == 201, first.text
    order_id = first.headers["Location"].split("/")[-1]
    with session_scope() as session:  # committed: visible from a fresh session
        order = session.get(Order, order_id)
        runs = session.exec(select(PathwayRun).where(PathwayRun.order_id == order_id)).all()
    assert (order.placer_order_number, order.priority, order.sender) == ("PL123", "urgent", "fhir^FHIR")
    assert [r.status for r in runs] == ["waiting"]
    assert [o.order_id for o in api.committed] == [order_id]
    again = post(api, service_request())
    assert again.status_code == 200 and "already recorded" in again.json()["issue"][0]["diagnostics"]
    assert len(api.committed) == 1


def test_changed_version_of_the_same_order_is_kept_not_applied(api):
    order_id = post(api, service_request()).headers["Location"].split("/")[-1]
    changed = post(api, service_request(priority="stat"))
    assert changed.status_code == 200 and order_id in changed.json()["issue"][0]["diagnostics"]
    with session_scope() as session:
        assert session.exec(select(Order)).one().priority == "urgent"
        assert len(session.exec(select(InboundMessage)).all()) == 2


def _send_hl7(*messages: str) -> list[bytes]:
    """Through radpath's real MLLP listener (python-hl7's client as the RIS)."""
    import hl7.client

    with ThreadedListener() as listener, hl7.client.MLLPClient("127.0.0.1", listener.port) as client:
        return [client.send_message(m) for m in messages]


def _counts() -> tuple[int, int]:
    with session_scope() as session:
        return len(session.exec(select(Order)).all()), len(session.exec(select(PathwayRun)).all())


def test_fhir_then_the_same_order_as_hl7_through_the_listener_is_one_order_and_one_run(api):
    created = post(api, service_request())
    order_id = created.headers["Location"].split("/")[-1]
    acks = _send_hl7(hl7_order("H1"), hl7_order("H1"), hl7_order("H2"))  # a resend, and a new control id
    assert [msa(a)[0] for a in acks] == ["AA", "AA", "AA"]
    assert _counts() == (1, 1)
    with session_scope() as session:
        statuses = sorted(m.status for m in session.exec(select(InboundMessage)).all())
        duplicates = session.exec(select(AuditEvent).where(AuditEvent.action == "order.duplicate")).all()
    assert statuses == ["accepted", "duplicate", "duplicate"]  # every message kept, as received
    assert {d.entity_id for d in duplicates} == {order_id}


def test_hl7_its_resend_then_fhir_is_one_order_and_one_run(api):
    acks = _send_hl7(hl7_order("H1"), hl7_order("H1"))
    assert [msa(a)[0] for a in acks] == ["AA", "AA"]
    (order_id,) = [o.id for o in _orders()]
    answer = post(api, service_request())
    assert answer.status_code == 200 and order_id in answer.json()["issue"][0]["diagnostics"]
    assert _counts() == (1, 1) and api.committed == []


def _orders() -> list[Order]:
    with session_scope() as session:
        return list(session.exec(select(Order)).all())


OTHER_NHS = "9434765870"  # another patient (valid modulus-11)


def _other_patient(resource: dict) -> dict:
    resource["contained"][0]["identifier"][0]["value"] = OTHER_NHS
    resource["contained"][0]["name"][0]["family"] = "JONES"
    return resource


def test_two_service_requests_sharing_a_requisition_are_two_orders(api):
    """No PLAC identifier, same requisition, another accession and patient: two orders, never one."""
    first, second = service_request(), _other_patient(service_request(id="sr-2"))
    for resource in (first, second):
        resource["identifier"] = resource["identifier"][1:]
    second["identifier"][0]["value"] = "ACC00002"
    assert [post(api, r).status_code for r in (first, second)] == [201, 201]
    assert _counts() == (2, 2) and len({o.patient_key for o in _orders()}) == 2


@pytest.mark.parametrize("clash", [
    {"placer": "PL123", "accession": "ACC00002"},  # same placer number
    {"placer": "PL999", "accession": "ACC00001"},  # same accession
])
def test_the_same_identifiers_for_another_patient_are_refused_at_each_door_and_audited(api, clash):
    post(api, service_request())
    (first,) = _orders()
    other = _other_patient(service_request(id="sr-2"))
    other["identifier"][0]["value"], other["identifier"][1]["value"] = clash["placer"], clash["accession"]
    answer = post(api, other)
    assert answer.status_code == 409, answer.text
    issue = answer.json()["issue"][0]
    assert issue["code"] == "conflict" and "another patient" in issue["diagnostics"]
    assert OTHER_NHS not in answer.text
    fhir_schema_validator().validate_resource(answer.json())
    assert post(api, other).status_code == 409  # a resend: the same answer
    # the other door: another sender's placer numbers are its own, so the accession is what clashes
    [ack] = _send_hl7(hl7_order("H1", nhs=OTHER_NHS, placer=clash["placer"], accession="ACC00001"))
    assert msa(ack)[0] == "AE" and "^205" in err(ack)
    (still,) = _orders()
    assert still.model_dump() == first.model_dump()  # the first order untouched
    with session_scope() as session:
        conflicts = session.exec(select(AuditEvent).where(AuditEvent.action == "order.conflict")).all()
        rejected = session.exec(select(InboundMessage).where(InboundMessage.status == "rejected")).all()
        assert [r.status for r in session.exec(select(PathwayRun)).all()] == ["waiting"]
    assert len(conflicts) == 2 and {c.entity_id for c in conflicts} == {first.id} and len(rejected) == 2
    assert post(api, service_request(id="sr-3", identifier=[  # and the service keeps serving
        {"type": {"coding": [{"system": V2_0203, "code": "PLAC"}]}, "value": "PL5"},
        {"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]}, "value": "ACC00005"}])).status_code == 201


@pytest.mark.parametrize("status", ["revoked", "entered-in-error"])
def test_status_change_cancels_like_hl7_ca(api, status):
    order_id = post(api, service_request()).headers["Location"].split("/")[-1]
    cancel = api.put("/fhir/ServiceRequest/sr-1", content=json.dumps(service_request(status=status)),
                     headers={"Content-Type": "application/fhir+json"})
    assert cancel.status_code == 200, cancel.text
    assert "1 pathway runs stopped" in cancel.json()["issue"][0]["diagnostics"]
    with session_scope() as session:
        assert session.get(Order, order_id).status == "cancelled"
        runs = session.exec(select(PathwayRun).where(PathwayRun.order_id == order_id)).all()
        actions = [a.action for a in session.exec(select(AuditEvent)).all()]
    assert [r.status for r in runs] == ["cancelled"] and "order.cancelled" in actions
    assert [c.order_id for c in api.cancelled] == [order_id]
    repeat = api.put("/fhir/ServiceRequest/sr-1", content=json.dumps(service_request(status=status)),
                     headers={"Content-Type": "application/fhir+json"})
    assert repeat.status_code == 200 and len(api.cancelled) == 1


def test_a_completed_service_request_marks_the_exam_completed_once(api):
    """ServiceRequest.status `completed` is the FHIR door's exam-completed signal (as HL7 ORC-5 CM):
    readiness then needs only the spec's `completed_quiet_seconds` (tests/test_completion_signals.py)."""
    order_id = post(api, service_request()).headers["Location"].split("/")[-1]
    done = api.put("/fhir/ServiceRequest/sr-1", content=json.dumps(service_request(status="completed")),
                   headers={"Content-Type": "application/fhir+json"})
    assert done.status_code == 200 and "exam completed noted" in done.json()["issue"][0]["diagnostics"], done.text
    with session_scope() as session:
        first = session.get(Order, order_id).exam_completed_at
        runs = session.exec(select(PathwayRun).where(PathwayRun.order_id == order_id)).all()
    assert first is not None and [r.status for r in runs] == ["waiting"]  # the run still waits for its images
    repeat = api.put("/fhir/ServiceRequest/sr-1", content=json.dumps(service_request(status="completed")),
                     headers={"Content-Type": "application/fhir+json"})
    assert repeat.status_code == 200 and "exam completed noted" in repeat.json()["issue"][0]["diagnostics"]
    with session_scope() as session:
        assert session.get(Order, order_id).exam_completed_at == first
    unknown = post(api, service_request(id="sr-9", status="completed", identifier=[
        {"type": {"coding": [{"system": V2_0203, "code": "PLAC"}]}, "value": "PL9"},
        {"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]}, "value": "ACC00009"}]))
    assert unknown.status_code == 200 and unknown.json()["issue"][0]["severity"] == "warning"
    assert "nothing to mark completed" in unknown.json()["issue"][0]["diagnostics"]


def test_cancelling_an_unknown_order_warns(api):
    answer = post(api, service_request(status="revoked"))
    assert answer.status_code == 200 and answer.json()["issue"][0]["severity"] == "warning"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{not json", "application/fhir+json", 400, "structure"),
        (json.dumps({"resourceType": "Patient"}).encode(), "application/fhir+json", 400, "structure"),
        (json.dumps(service_request(intent="plan")).encode(), "application/fhir+json", 422, "business-rule"),
        (b"<ServiceRequest/>", "application/fhir+xml", 415, "not-supported"),
        # Found by fuzzing (issue 20): each of these was a 500.
        (b'{"resourceType": "ServiceRequest", "note": ' + b"[" * 1000 + b"]" * 1000 + b"}", "application/fhir+json",
         400, "structure"),
        (b"[" * 100_000 + b"]" * 100_000, "application/fhir+json", 400, "structure"),
        (json.dumps(service_request(contained={"resourceType": "Patient", "id": "pat"})).encode(), "application/fhir+json",
         400, "structure"),
        (json.dumps(service_request(contained=[None])).encode(), "application/fhir+json", 400, "structure"),
        (json.dumps(service_request(contained=["pat"])).encode(), "application/fhir+json", 400, "structure"),
        (json.dumps(service_request(identifier={"value": "PL123"})).encode(), "application/fhir+json", 400, "structure"),
        (json.dumps(service_request(subject="#pat")).encode(), "application/fhir+json", 400, "structure"),
    ],
)
def test_invalid_input_gets_an_operation_outcome(api, body, content_type, status, code):
    answer = api.post("/fhir/ServiceRequest", content=body, headers={"Content-Type": content_type})
    assert answer.status_code == status
    assert answer.headers["content-type"].startswith("application/fhir+json")
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == code
    fhir_schema_validator().validate_resource(outcome)


def test_oversized_body_is_413(radpath_env, registry, monkeypatch):
    monkeypatch.setenv("RADPATH_FHIR_MAX_BODY_BYTES", "2048")
    reset_settings()
    big = service_request(note=[{"text": "x" * 4000}])
    with fhir_api(registry) as api:
        answer = post(api, big)
    assert answer.status_code == 413 and answer.json()["issue"][0]["code"] == "too-costly"


def test_inbound_authentication(radpath_env, registry, monkeypatch):
    monkeypatch.setenv("RADPATH_FHIR_INBOUND_TOKENS", json.dumps({"epic": "s3cret-token"}))
    reset_settings()
    with fhir_api(registry) as api:
        assert post(api, service_request()).status_code == 401
        wrong = post(api, service_request(), Authorization="Bearer nope")
        assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Bearer")
        ok = post(api, service_request(), Authorization="Bearer s3cret-token")
    assert ok.status_code == 201
    with session_scope() as session:
        assert session.exec(select(Order)).one().sender == "epic^FHIR"
        refused = session.exec(select(AuditEvent).where(AuditEvent.action == "auth.refused")).all()
    assert [(a.actor, a.entity_type) for a in refused] == [("fhir", "peer_address")] * 2  # a security alert each


def backport_notification(kind: str, *resources: dict) -> dict:
    """An R4 Backport notification Bundle (Subscriptions R4 Backport IG 1.1, full-resource content)."""
    status = {
        "resourceType": "Parameters",
        "meta": {"profile": ["http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                             "backport-subscription-status-r4"]},
        "parameter": [
            {"name": "subscription", "valueReference": {"reference": "https://ehr.example/fhir/Subscription/7"}},
            {"name": "topic", "valueCanonical": "https://trust.example/SubscriptionTopic/imaging-orders"},
            {"name": "status", "valueCode": "active"},
            {"name": "type", "valueCode": kind},
            {"name": "events-since-subscription-start", "valueString": str(len(resources))},
        ],
    }
    entries = [{"fullUrl": "urn:uuid:9b1e6a1c-5d0e-4a53-8d55-0e3d4f9c2a10", "resource": status,
                "request": {"method": "GET", "url": "https://ehr.example/fhir/Subscription/7/$status"},
                "response": {"status": "200"}}]
    for r in resources:
        entries.append({"fullUrl": f"https://ehr.example/fhir/{r['resourceType']}/{r['id']}", "resource": r,
                        "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
                        "response": {"status": "201"}})
    return {"resourceType": "Bundle", "type": "history", "timestamp": "2026-11-29T10:15:00Z", "entry": entries}


def test_subscription_notification_creates_the_order(api):
    patient = copy.deepcopy(service_request()["contained"][0]) | {"id": "p1"}
    request = service_request(subject={"reference": "Patient/p1"})
    del request["contained"]
    bundle = backport_notification("event-notification", request, patient)
    fhir_schema_validator().validate_resource(bundle)  # our test input is itself valid R4
    handshake = api.post("/fhir/notification", content=json.dumps(backport_notification("handshake")),
                         headers={"Content-Type": "application/fhir+json"})
    assert handshake.status_code == 200 and not api.committed
    answer = api.post("/fhir/notification", content=json.dumps(bundle), headers={"Content-Type": "application/fhir+json"})
    assert answer.status_code == 200, answer.text
    assert len(api.committed) == 1
    with session_scope() as session:
        order = session.exec(select(Order)).one()
    assert order.nhs_number == NHS and order.birth_date.isoformat() == "1958-03-12"


@pytest.mark.parametrize("entry", [None, [None], {"resource": {}}, [{"resource": []}], ["x"]])
def test_a_notification_of_the_wrong_shape_is_a_400_not_a_500(api, entry):
    bundle = {"resourceType": "Bundle", "type": "history", "entry": entry}
    answer = api.post("/fhir/notification", content=json.dumps(bundle), headers={"Content-Type": "application/fhir+json"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["resourceType"] == "OperationOutcome"


def test_id_only_notification_is_refused_with_a_reason(api):
    bundle = backport_notification("event-notification")
    answer = api.post("/fhir/notification", content=json.dumps(bundle), headers={"Content-Type": "application/fhir+json"})
    assert answer.status_code == 422 and answer.json()["issue"][0]["code"] == "not-supported"
