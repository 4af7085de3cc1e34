"""The offline `LLM` as an lm-eval-harness model (`sliceserve`): loglikelihood tasks scored from prompt
logprobs, the same numbers `/v1/completions` with echo + logprobs returns (lm-eval's `local-completions`).

    import lm_eval, sliceserve.integrations.lm_eval
    lm_eval.simple_evaluate(model="sliceserve", model_args="max_model_len=1024", tasks=[...])

Tokenisation matches `local-completions` with a Hugging Face tokenizer: no special tokens added, context
and continuation split as lm-eval's TemplateLM does.
"""
from __future__ import annotations

from typing import Any

from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

from sliceserve.engine.llm import LLM
from sliceserve.request import SamplingParams


@register_model("sliceserve")
class SliceserveLM(TemplateLM):
    def __init__(self, llm: LLM | None = None, batch_size: int = 16, **llm_kwargs: Any) -> None:
        super().__init__()
        self.llm = llm if llm is not None else LLM(**llm_kwargs)
        self.tokenizer = self.llm.tokenizer
        self.batch = int(batch_size)

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return list(self.tokenizer.encode(string, add_special_tokens=bool(add_special_tokens)))

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        out: list[tuple[float, bool]] = []
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)
        for lo in range(0, len(requests), self.batch):
            chunk = requests[lo:lo + self.batch]
            results = self.llm.generate([ctx + cont for _, ctx, cont in chunk], params)
            for (_, ctx, _), res in zip(chunk, results):
                entries = res.prompt_logprobs[len(ctx):]
                total = sum(lp for lp, _ in entries)
                greedy = all(lp >= alts[0][1] for lp, alts in entries)
                out.append((total, greedy))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError("rolling loglikelihood (perplexity tasks) is not implemented")

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        outs = []
        for req in requests:
            context, gen = req.args
            until = gen.get("until") or []
            params = SamplingParams(max_tokens=int(gen.get("max_gen_toks", 64)), temperature=0.0,
                                    stop=tuple([until] if isinstance(until, str) else until))
            outs.append(self.llm.generate(context, params)[0].text)
        return outs
