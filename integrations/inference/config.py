"""Where a pathway's model runs: locally (onnxruntime, the default) or on a trust's inference server.

The spec names the model (file, sha256: the model card's contract); the trust's settings say
whether it runs in-process or on a remote server speaking the Open Inference Protocol (the
KServe v2 REST protocol that NVIDIA Triton, KServe and Seldon MLServer serve), keyed by the
spec's model name. The same split as destinations: the pathway never changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class InferenceService(BaseModel):
    """A remote Open Inference Protocol server that runs one of the specs' models."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^https?://", description="Base URL; requests go to <url>/v2/models/...")
    model: str | None = Field(default=None, description="The model's name on the server; default the spec's")
    version: str | None = Field(default=None, description="A model version on the server (OIP versioned path)")
    timeout_seconds: float = Field(default=300.0, gt=0)
    bearer_token: SecretStr | None = None
    bearer_token_file: Path | None = None
    burned_in_annotation: Literal["refuse", "allow"] = Field(
        default="refuse", description="refuse: images that carry burned-in text, or may (pathways/disclosure.py), are "
        "not sent and the run ends not measurable; allow only for a service inside the trust")

    def headers(self) -> dict[str, str]:
        token = self.bearer_token.get_secret_value() if self.bearer_token else None
        if token is None and self.bearer_token_file is not None:
            token = self.bearer_token_file.read_text().strip()
        return {"Authorization": f"Bearer {token}"} if token else {}
