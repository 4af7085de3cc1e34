"""Which pooling turns the served chat model's hidden states into useful embeddings? On the embedded
SmolLM2-135M-Instruct, for each pooling the runner offers (sliceserve.model.pooling.POOLINGS), prints the
cosine of each hand-written (anchor, paraphrase) and (anchor, unrelated) pair (tests/model/embedding_triples.py),
how many triples put the paraphrase closer, and the margins.

  .venv/bin/python benchmarks/embedding_pooling.py
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.model.embedding_triples import TRIPLES  # noqa: E402

from sliceserve.engine.llm import LLM  # noqa: E402
from sliceserve.model.pooling import POOLINGS  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    llm = LLM(profile="paper-4060ti")     # the profile only paces the scheduler; no start-up measurement
    texts = [t for triple in TRIPLES for t in triple]
    print(f"load average {open('/proc/loadavg').read().strip()}")
    for pooling in POOLINGS:
        llm.model.runner.pooler.pooling = pooling
        start = time.perf_counter()
        vecs = torch.tensor([o.embedding for o in llm.embed(texts)])
        elapsed = time.perf_counter() - start
        margins = []
        for i in range(len(TRIPLES)):
            anchor, para, other = vecs[3 * i:3 * i + 3]
            sp, so = float(anchor @ para), float(anchor @ other)
            margins.append(sp - so)
            print(f"  {pooling:>4} triple {i}: paraphrase {sp:.3f}, unrelated {so:.3f}")
        wins = sum(m > 0 for m in margins)
        print(f"{pooling}: paraphrase closer in {wins}/{len(TRIPLES)}; margin mean {sum(margins) / len(margins):.3f}, "
              f"min {min(margins):.3f}; {len(texts)} texts embedded in {elapsed:.2f} s")


if __name__ == "__main__":
    main()
