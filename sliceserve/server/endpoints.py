"""vLLM's small endpoints: `GET /v1/models/{id}`, `POST /tokenize`, `POST /detokenize`, `GET /version`."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from sliceserve.server.protocol import APIError, ChatMessage, ChatRequest
from sliceserve.server.requests import check_model
from sliceserve.server.state import ServingState


class TokenizeBody(BaseModel):
    """Either `prompt` (completions) or `messages` (chat, rendered by the template), as vLLM takes them."""
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    add_special_tokens: bool = True
    add_generation_prompt: bool = True


class DetokenizeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    tokens: list[int] = Field(min_length=0)


def model_card(state: ServingState) -> dict[str, Any]:
    # max_model_len as vLLM reports it; vocab_size lets `bench --url` send valid random token prompts.
    return {"id": state.model_name, "object": "model", "created": 0, "owned_by": "sliceserve",
            "root": state.model_name, "parent": None, "max_model_len": state.max_model_len,
            "vocab_size": state.vocab_size}


def vllm_router(state: ServingState) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        check_model(state, model_id)
        return model_card(state)

    @router.post("/tokenize")
    async def tokenize(body: TokenizeBody) -> dict[str, Any]:
        check_model(state, body.model)
        tok = state.tokenizer
        if (body.prompt is None) == (body.messages is None):
            raise APIError(400, "give either prompt or messages", param="prompt")
        if body.messages is not None:
            from sliceserve.server.requests import chat_prompt_ids

            chat = ChatRequest(messages=body.messages)
            ids = chat_prompt_ids(state, chat) if body.add_generation_prompt else list(tok.encode(
                tok.apply_chat_template([{"role": m.role, "content": m.text()} for m in body.messages],
                                        tokenize=False), add_special_tokens=False))
        else:
            ids = list(tok.encode(body.prompt, add_special_tokens=body.add_special_tokens))
        return {"count": len(ids), "max_model_len": state.max_model_len, "tokens": ids}

    @router.post("/detokenize")
    async def detokenize(body: DetokenizeBody) -> dict[str, Any]:
        check_model(state, body.model)
        bad = [t for t in body.tokens if not 0 <= t < len(state.tokenizer)]
        if bad:
            raise APIError(400, f"token id {bad[0]} is outside the vocabulary", param="tokens")
        return {"prompt": state.tokenizer.decode(body.tokens)}

    @router.get("/version")
    async def version() -> dict[str, str]:
        from sliceserve import __version__

        return {"version": __version__}

    return router
