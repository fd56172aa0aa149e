"""GET /models: what each live worker process has loaded."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import WorkersDep
from api.routes.common import error_responses
from api.schemas import ModelsPublic

router = APIRouter(tags=["operations"])


@router.get(
    "/models",
    response_model=ModelsPublic,
    summary="The models each worker has loaded",
    description=(
        "One entry per live worker process: its device and, per loaded model, the checkpoint name, kind, "
        "parameter count, dtype, and the metrics and training hardware from its model card; plus the "
        "checkpoints it could not load and why.\n\n```\ncurl localhost:8000/models\n```"
    ),
    responses=error_responses(503),
)
async def list_models(workers: WorkersDep) -> ModelsPublic:
    return ModelsPublic(workers=await workers.live())
