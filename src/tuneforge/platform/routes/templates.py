"""/api/v1/templates: each template with the JSON schema of its hyperparameters (the console's form)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from tuneforge.errors import NotFoundError
from tuneforge.spec import TEMPLATES, DatasetRef, DataSpec, JobSpec, parse_spec

from ..bodies import BoundedJsonRoute
from ..deps import admin

router = APIRouter(
    prefix="/api/v1/templates",
    tags=["templates"],
    dependencies=[Depends(admin)],
    route_class=BoundedJsonRoute,
)


def template_dict(name: str) -> dict:
    t = TEMPLATES[name]
    defaults = parse_spec(
        {
            "template": name,
            "model": "MODEL",
            "data": DataSpec(train=[DatasetRef(path="DATASET")]).model_dump(),
        }
    )
    return {
        "name": name,
        "method": t["method"],
        "finetuning": t["finetuning"],
        "description": t["description"],
        "defaults": defaults.model_dump(mode="json", exclude={"model", "data", "output_dir", "resume_from"}),
        "default_learning_rate": defaults.learning_rate,
        "schema": JobSpec.model_json_schema(),
    }


@router.get("")
def list_templates() -> dict:
    return {"data": [template_dict(n) for n in TEMPLATES]}


@router.get("/{name}")
def get_template(name: str) -> dict:
    if name not in TEMPLATES:
        raise NotFoundError(f"no template {name!r}")
    return template_dict(name)
