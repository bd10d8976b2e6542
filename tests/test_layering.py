"""Imports point down only: flows → tasks → integrations → pathways (and radpath/ on top)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NETWORK = {"prefect", "httpx", "pynetdicom", "socket", "requests", "asyncio", "hl7apy", "sqlmodel", "sqlalchemy", "onnxruntime"}
FORBIDDEN = {
    "pathways": {"flows", "tasks", "integrations", "radpath"} | NETWORK,
    "integrations": {"flows", "tasks", "radpath", "prefect"},
    "tasks": {"flows", "radpath"},
    "flows": {"radpath"},
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_point_down(layer):
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & FORBIDDEN[layer])
        for path in (ROOT / layer).rglob("*.py")
        if _imports(path) & FORBIDDEN[layer]
    }
    assert offenders == {}


# Inside integrations/: base modules (pure declarations and shared helpers) import only each other;
# the ledger (db) imports only base modules and pathways; each protocol adapter imports base, db
# and itself, never another adapter nor the outbound delivery package, which sits above them all.
BASE = {"errors", "settings", "tls", "http_auth", "durable", "uids", "delivery.config", "dicom.config",
        "inference.config"}
ADAPTERS = {"dicom", "fhir", "hl7", "inference"}


def _integrations_imports(path: Path) -> set[str]:
    """The integrations modules a file imports, relative to the package (`db.ledger`, `errors`)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                 else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        out |= {n.removeprefix("integrations.") for n in names if n.startswith("integrations.")}
    return out


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT / "integrations").with_suffix("").parts)


def _allowed(module: str, target: str) -> bool:
    top = target.split(".")[0]
    if target in BASE or (module in BASE and target in BASE):
        return True
    if module in BASE:
        return False
    own = module.split(".")[0]
    if own == "db":
        return top == "db"
    if own in ADAPTERS:
        return top in {own, "db"}
    if own == "delivery":
        return top in ADAPTERS | {"delivery", "db"}
    return False


def test_no_import_runs_back_up_inside_integrations():
    offenders = {}
    for path in (ROOT / "integrations").rglob("*.py"):
        if "migrations" in path.parts or path.name == "__init__.py":
            continue
        module = _module(path)
        bad = sorted(t for t in _integrations_imports(path) if t and not _allowed(module, t))
        if bad:
            offenders[module] = bad
    assert offenders == {}


# Outside integrations/db/ nothing writes (or reads) a ledger table: no session, no engine, no table
# class, no SQL. The ledger's modules are the one write path per record.
LEDGER_MACHINERY = {"integrations.db.engine": {"session_scope", "get_engine"}}
SQL_PACKAGES = ("sqlalchemy", "sqlmodel")


def _ledger_tables() -> set[str]:
    tree = ast.parse((ROOT / "integrations/db/models.py").read_text())
    return {node.name for node in tree.body if isinstance(node, ast.ClassDef)
            and any(k.arg == "table" for k in node.keywords)}


def _runtime_imports(tree: ast.Module) -> list[ast.ImportFrom | ast.Import]:
    """Imports outside `if TYPE_CHECKING:` blocks (annotations may name a Session)."""
    found = []

    def visit(nodes) -> None:  # noqa: ANN001
        for node in nodes:
            if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append(node)
            for child in ("body", "orelse", "finalbody", "handlers"):
                visit(getattr(node, child, []))

    visit(tree.body)
    return found


def test_only_the_ledger_modules_touch_ledger_tables():
    tables = _ledger_tables()
    assert {"Order", "PathwayRun", "Result", "Delivery", "AuditEvent"} <= tables
    offenders = {}
    for layer in ("integrations", "flows", "tasks", "radpath", "pathways", "deployments"):
        for path in (ROOT / layer).rglob("*.py"):
            if path.is_relative_to(ROOT / "integrations/db"):
                continue
            bad = []
            for node in _runtime_imports(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    bad += [a.name for a in node.names if a.name.split(".")[0] in SQL_PACKAGES]
                    continue
                module, names = node.module or "", {a.name for a in node.names}
                if module.split(".")[0] in SQL_PACKAGES and module != "sqlalchemy.exc":
                    bad.append(module)
                elif module == "integrations.db.models" and names & tables:
                    bad += sorted(names & tables)
                elif names & LEDGER_MACHINERY.get(module, set()):
                    bad += sorted(names & LEDGER_MACHINERY[module])
            if bad:
                offenders[str(path.relative_to(ROOT))] = bad
    assert offenders == {}


STATUS_ATTRIBUTES = {"status", "review_status"}
OUTBOX_ONLY_WORDS = {"dead_letter", "held", "discarded"}  # spelled nowhere but DeliveryStatus


def test_statuses_are_named_not_spelled():
    """A run's, an outbox row's or a review's status is compared by its enum member (RunStatus,
    DeliveryStatus, ReviewStatus), never as a bare string a typo would silently never match."""
    offenders = []
    for layer in ("integrations", "flows", "tasks", "radpath"):
        for path in (ROOT / layer).rglob("*.py"):
            if path == ROOT / "integrations/db/models.py" or "migrations" in path.parts:
                continue
            audit_verbs = path == ROOT / "integrations/fhir/audit_event.py"  # "delivery.discarded" is a verb there
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Compare):
                    sides = [node.left, *node.comparators]
                    status = any(isinstance(s, ast.Attribute) and s.attr in STATUS_ATTRIBUTES for s in sides)
                    spelled = [s.value for s in sides if isinstance(s, ast.Constant) and isinstance(s.value, str)]
                    if status and spelled:
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} compares a status with {spelled}")
                elif isinstance(node, ast.Constant) and node.value in OUTBOX_ONLY_WORDS and not audit_verbs:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} spells {node.value!r}")
    assert offenders == []


def test_an_outbox_row_moves_only_along_its_life_cycle():
    from integrations.db.models import DELIVERY_MOVES, DeliveryStatus, delivery_move

    assert set(DELIVERY_MOVES) == set(DeliveryStatus)
    assert delivery_move("held", DeliveryStatus.PENDING) is DeliveryStatus.PENDING  # the review released it
    for terminal in (DeliveryStatus.DELIVERED, DeliveryStatus.REJECTED, DeliveryStatus.DISCARDED):
        for to in DeliveryStatus:
            with pytest.raises(ValueError):
                delivery_move(terminal, to)  # delivered once, never again; a rejected row is never sent
    with pytest.raises(ValueError):
        delivery_move("held", DeliveryStatus.DELIVERED)  # a held row is never sent before the decision
