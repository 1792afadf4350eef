"""POST /v1/ask and POST /v1/search."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends

from assistant.api.auth import caller
from assistant.api.schemas import AnswerModel, AskRequest, SearchRequest, SearchResponse, error_responses
from assistant.api.state import ApiState, api_state
from assistant.types import User
from model.prompt import Turn

router = APIRouter(prefix="/v1", tags=["questions"], responses=error_responses(400, 401, 413, 422, 429, 503))


@router.post("/ask", response_model=AnswerModel, responses=error_responses(403))
def ask(
    request: AskRequest, user: Annotated[User, Depends(caller)], api: Annotated[ApiState, Depends(api_state)]
) -> dict:
    """An answer from the passages the caller may read, with those passages as its numbered sources."""
    history = [Turn(turn.question, turn.answer) for turn in request.history]
    answer = api.assistant.ask(request.question, user, k=request.k, history=history)
    api.metrics.observe_answer(answer, "ask")
    return answer.to_dict()


@router.post("/search", response_model=SearchResponse)
def search(
    request: SearchRequest, user: Annotated[User, Depends(caller)], api: Annotated[ApiState, Depends(api_state)]
) -> dict:
    """The passages the caller may read that best match the query, best first."""
    started = time.perf_counter()
    sources = api.assistant.search(request.query, user, k=request.k)
    api.metrics.retrieval.labels("search").observe(time.perf_counter() - started)
    return {"sources": [source.to_dict() for source in sources]}
