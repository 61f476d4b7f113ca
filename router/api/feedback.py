"""``POST /v1/feedback``: the outcome of a served request (the correction flywheel).

The inference-log writer is the gateway's (``router.api.deps.log_writer``: 503 when the app
records elsewhere); a record still in the writer's queue is written before the update, so
feedback right after a response works.
Idempotent: posting the same outcome twice leaves the same row. Unknown request id: 404.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from lora_router.router.api.deps import LogWriterDep
from lora_router.router.api.openapi import error_responses

router = APIRouter(tags=["feedback"])


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=256)
    was_correct: bool
    failure_cluster: str | None = Field(default=None, max_length=256)


class FeedbackOut(BaseModel):
    request_id: str
    was_correct: bool
    failure_cluster: str | None


@router.post(
    "/v1/feedback", response_model=FeedbackOut,
    responses=error_responses(400, 404, 413, 422, 431, 503),
)
async def post_feedback(body: FeedbackIn, writer: LogWriterDep) -> FeedbackOut:
    """Set ``was_correct`` and ``failure_cluster`` (null when omitted) of one request."""
    await writer.feedback(body.request_id, body.was_correct, body.failure_cluster)
    return FeedbackOut(**body.model_dump())
