"""Start the flow a pathway spec names, in this process (demo, reconciler, benchmarks).

No `tags()` context here: task runs inherit a context's tags, and every tagged task run asks
the API for tag concurrency slots (seconds per run against the embedded SQLite API). The flow
tags its own flow run for ops instead (`flows.common.start_run`)."""

from __future__ import annotations

import importlib

from integrations.db import ledger
from pathways.registry import default_registry


def flow_for(pathway: str):  # noqa: ANN201
    module, _, name = default_registry().get(pathway).flow.partition(":")
    return getattr(importlib.import_module(module), name)


async def run_pathway(run_id: str):  # noqa: ANN201
    """Run one ready pathway run; returns the flow's final state."""
    view = ledger.run_view(run_id)
    flow_fn = flow_for(view.pathway)
    return await flow_fn(run_id=run_id, study_key=view.study_key, return_state=True)

