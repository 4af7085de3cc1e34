"""One choice of a response (a request's sample): text through the detokeniser, tool calls, logprobs,
finish reason; as a streamed chunk choice or as the final choice of a full response."""
from __future__ import annotations

from typing import Any

from sliceserve.engine.async_engine import StreamEvent
from sliceserve.request import FinishReason, Request
from sliceserve.server import tools
from sliceserve.server.detok import Detokenizer
from sliceserve.server.logprobs_format import chat_content, completion_logprobs, merge
from sliceserve.server.protocol import ChatRequest, CompletionRequest


class Choice:
    def __init__(self, tokenizer: Any, body: CompletionRequest | ChatRequest, req: Request, index: int) -> None:
        self.tok, self.req, self.index = tokenizer, req, index
        self.chat = isinstance(body, ChatRequest)
        self.detok = Detokenizer(tokenizer, req.sampling_params.stop)
        self.tools = tools.ToolStream() if self.chat and tools.active(body) else None
        self.echo = not self.chat and body.echo
        self.want_logprobs = req.sampling_params.logprobs is not None
        self.text = ""
        self.num_tokens = 0          # output tokens seen in events so far
        self.echo_len = 0            # characters of echoed prompt before the completion (streaming)
        self.finish: str | None = None

    # --- shared -------------------------------------------------------------------------------------------
    def _advance(self, ev: StreamEvent) -> tuple[str, list[int]]:
        piece = self.detok.push(ev.new_token_ids, final=ev.finished)
        self.text += piece
        start = self.num_tokens
        self.num_tokens += len(ev.new_token_ids)
        if ev.finished:
            self.finish = self._finish_reason(ev)
        return piece, list(range(start, self.num_tokens))

    def _finish_reason(self, ev: StreamEvent) -> str:
        if self.tools is not None and tools.parse(self.text)[1]:
            return "tool_calls"
        if self.detok.stopped or ev.finish_reason is FinishReason.STOP:
            return "stop"
        return "length"

    def _prompt_text(self) -> str:
        return self.tok.decode(self.req.prompt_token_ids, skip_special_tokens=False)

    def _completion_lps(self, positions: list[int], offset: int) -> dict[str, Any]:
        ids = [self.req.output_token_ids[i] for i in positions]
        return completion_logprobs(self.tok, ids, [self.req.logprobs[i] for i in positions], offset)

    def _prompt_lps(self) -> dict[str, Any] | None:
        if self.req.sampling_params.prompt_logprobs is None:
            return None
        entries = list(self.req.prompt_logprobs) or [None] * self.req.num_prompt_tokens
        return completion_logprobs(self.tok, self.req.prompt_token_ids, entries)

    # --- streaming ----------------------------------------------------------------------------------------
    def chunk(self, ev: StreamEvent, first: bool = False) -> dict[str, Any] | None:
        """The chunk choice for `ev`, or None when it carries nothing to send."""
        before = len(self.text)
        piece, positions = self._advance(ev)
        if self.chat:
            return self._chat_chunk(piece, positions, first)
        prefix = ""
        lps = None
        if first and self.echo:
            prefix = self._prompt_text()
            self.echo_len = len(prefix)
            lps = self._prompt_lps()
        if self.want_logprobs and positions:
            lps = merge(lps, self._completion_lps(positions, self.echo_len + before))
        if not (prefix or piece or self.finish or lps):
            return None
        return {"index": self.index, "text": prefix + piece, "finish_reason": self.finish, "logprobs": lps}

    def _chat_chunk(self, piece: str, positions: list[int], first: bool) -> dict[str, Any] | None:
        delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
        if self.tools is not None:
            content, calls = self.tools.push(piece, final=self.finish is not None)
            if content:
                delta["content"] = content
            if calls:
                delta["tool_calls"] = calls
        elif piece:
            delta["content"] = piece
        lps = None
        if self.want_logprobs and positions:
            ids = [self.req.output_token_ids[i] for i in positions]
            lps = {"content": chat_content(self.tok, ids, [self.req.logprobs[i] for i in positions]), "refusal": None}
        if not first and not delta and self.finish is None and lps is None:
            return None
        return {"index": self.index, "delta": delta, "finish_reason": self.finish, "logprobs": lps}

    # --- full response ------------------------------------------------------------------------------------
    def push_all(self, ev: StreamEvent) -> None:
        self._advance(ev)

    def final(self) -> dict[str, Any]:
        positions = list(range(self.num_tokens))
        if self.chat:
            content, calls = tools.parse(self.text) if self.tools is not None else (self.text, [])
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if calls:
                message["tool_calls"] = calls
            lps = None
            if self.want_logprobs:
                lps = {"content": chat_content(self.tok, self.req.output_token_ids[: self.num_tokens],
                                               self.req.logprobs[: self.num_tokens]), "refusal": None}
            return {"index": self.index, "message": message, "finish_reason": self.finish, "logprobs": lps}
        prefix = self._prompt_text() if self.echo else ""
        lps = self._prompt_lps() if self.echo else None
        if self.want_logprobs:
            lps = merge(lps, self._completion_lps(positions, len(prefix)))
        out = {"index": self.index, "text": prefix + self.text, "finish_reason": self.finish, "logprobs": lps}
        if not self.echo and self.req.sampling_params.prompt_logprobs is not None:
            out["prompt_logprobs"] = self._vllm_prompt_logprobs()
        return out

    def _vllm_prompt_logprobs(self) -> list[dict[str, Any] | None]:
        """vLLM's shape: per prompt position, token id -> {logprob, decoded_token} (None for the first)."""
        out: list[dict[str, Any] | None] = []
        for token, entry in zip(self.req.prompt_token_ids, self.req.prompt_logprobs or []):
            if entry is None:
                out.append(None)
                continue
            lp, alts = entry
            out.append({str(i): {"logprob": v, "decoded_token": self.tok.decode([i])} for i, v in [(token, lp), *alts]})
        return out
