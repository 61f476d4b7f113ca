"""``POST /v1/feedback``: the outcome of a served request (the correction flywheel).

The lifespan puts the inference-log writer on ``app.state.log_writer``; a record still in the
writer's queue is written before the update, so feedback right after a response works.
Idempotent: posting the same outcome twice leaves the same row. Unknown request id: 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from registry.errors import LogStoreUnavailable
from router.api.openapi import error_responses
from router.log.writer import LogWriter

router = APIRouter(tags=["feedback"])


async def get_log_writer(request: Request) -> LogWriter:
    writer: LogWriter | None = getattr(request.app.state, "log_writer", None)
    if writer is None:
        raise LogStoreUnavailable("the inference log is not enabled on this gateway")
    return writer


LogWriterDep = Annotated[LogWriter, Depends(get_log_writer)]


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
