"""How a trust's PACS is queried and retrieved from (order-triggered retrieval)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PacsSource(BaseModel):
    """QIDO-RS/WADO-RS over HTTP, or C-FIND/C-MOVE/C-GET over DIMSE; chosen per trust."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    query: Literal["qido-rs", "c-find"] = "qido-rs"
    retrieve: Literal["wado-rs", "c-move", "c-get"] = "wado-rs"
    dicomweb_url: str | None = Field(default=None, description="DICOMweb root, e.g. http://pacs/dicom-web")
    bearer_token: str | None = None
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    called_ae_title: str = Field(default="PACS", max_length=16)
    calling_ae_title: str = Field(default="RADPATH", max_length=16)
    timeout_seconds: float = Field(default=30.0, gt=0)
