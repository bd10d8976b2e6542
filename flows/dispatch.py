"""Start the flow a pathway spec names, in this process, tagged for ops."""

from __future__ import annotations

import importlib

from prefect import tags

from integrations.db import ledger
from pathways.registry import default_registry
from tasks.events import ops_tags


def flow_for(pathway: str):  # noqa: ANN201
    module, _, name = default_registry().get(pathway).flow.partition(":")
    return getattr(importlib.import_module(module), name)


async def run_pathway(run_id: str):  # noqa: ANN201
    """Run one ready pathway run; returns the flow's final state."""
    view = ledger.run_view(run_id)
    flow_fn = flow_for(view.pathway)
    with tags(*sorted(ops_tags(run_id))):
        return await flow_fn(run_id=run_id, study_key=view.study_key, return_state=True)

