"""Logit processors: each changes exactly the logits it should, by the documented amount."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sliceserve.model.logits_processing import logprob_entry, process, prompt_logprobs
from sliceserve.request import Request, SamplingParams


def _req(**params) -> Request:
    r = Request("r", [1, 2, 3], SamplingParams(max_tokens=10, **params), 0.0, eos_token_id=0)
    r.output_token_ids = [3, 4, 4]
    return r


def test_frequency_and_presence_penalties():
    logits = torch.zeros(8)
    out = process(logits, _req(frequency_penalty=0.5, presence_penalty=1.0))
    assert out.tolist() == [0, 0, 0, -1.5, -2.0, 0, 0, 0]    # 3 once, 4 twice; prompt tokens untouched


def test_repetition_penalty_divides_positive_and_multiplies_negative():
    logits = torch.tensor([1.0, 2.0, -2.0, 4.0, 1.0, 1.0])
    out = process(logits, _req(repetition_penalty=2.0))
    assert out.tolist() == [1.0, 1.0, -4.0, 2.0, 0.5, 1.0]   # seen: 1, 2, 3 (prompt) and 3, 4 (output)


def test_penalties_over_the_last_n_tokens_as_llama_cpp_counts_them():
    # prompt [1, 2, 3] + output [3, 4, 4]: the last 4 tokens are 3 (the prompt's), 3, 4, 4; the last 5 add 2.
    out = process(torch.zeros(8), _req(frequency_penalty=0.5, presence_penalty=1.0, penalty_last_n=4))
    assert out.tolist() == [0, 0, 0, -2.0, -2.0, 0, 0, 0]
    out = process(torch.zeros(8), _req(frequency_penalty=0.5, presence_penalty=1.0, penalty_last_n=5))
    assert out.tolist() == [0, 0, -1.5, -2.0, -2.0, 0, 0, 0]
    logits = torch.tensor([1.0, 2.0, -2.0, 4.0, 1.0, 1.0])
    out = process(logits, _req(repetition_penalty=2.0, penalty_last_n=2))
    assert out.tolist() == [1.0, 2.0, -2.0, 4.0, 0.5, 1.0]   # only 4 is in the last 2 tokens
    window_of_all = process(logits, _req(repetition_penalty=2.0, penalty_last_n=100))
    assert window_of_all.tolist() == process(logits, _req(repetition_penalty=2.0)).tolist()
    off = process(logits, _req(repetition_penalty=2.0, frequency_penalty=1.0, penalty_last_n=0))
    assert off.tolist() == logits.tolist()
    with pytest.raises(ValueError, match="penalty_last_n"):
        SamplingParams(penalty_last_n=-1)


def test_logit_bias_min_tokens_min_p_and_mask():
    logits = torch.tensor([5.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    out = process(logits, _req(logit_bias={2: 3.0}, min_tokens=5))
    assert out[0] == float("-inf") and out[2] == 3.0          # eos barred until 5 tokens; bias added
    allowed = np.array([True, False, True, True, False, False])
    masked = process(torch.zeros(6), _req(), allowed)
    assert torch.isinf(masked).tolist() == [False, True, False, False, True, True]
    minp = process(torch.tensor([2.0, 1.9, -5.0]), _req(min_p=0.5))
    assert torch.isinf(minp).tolist() == [False, False, True]


def test_unprocessed_params_leave_logits_alone():
    logits = torch.randn(10)
    assert torch.equal(process(logits, _req()), logits)


def test_logprob_entries_are_raw_log_softmax():
    logits = torch.tensor([1.0, 3.0, 2.0])
    lp, alts = logprob_entry(logits, 2, 2)
    ref = torch.log_softmax(logits, -1)
    assert lp == pytest.approx(float(ref[2])) and [i for i, _ in alts] == [1, 2]
    req = Request("p", [5, 1, 2, 0], SamplingParams(prompt_logprobs=1), 0.0)
    entries = prompt_logprobs(req, torch.stack([logits] * 4), 0)    # rows 0..2 predict prompt tokens 1..3
    assert sorted(entries) == [1, 2, 3] and entries[3][0] == pytest.approx(float(ref[0]))
