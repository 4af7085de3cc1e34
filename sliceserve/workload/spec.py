"""What a workload is: timed request specifications and the SLO classes they refer to."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from sliceserve.request import Request, SamplingParams
from sliceserve.slo import SLOClass
from sliceserve.workload.lengths import LengthDist

# The simulator never looks at token values; any id works. 1 avoids 0, which models often use as pad/eos.
DUMMY_PROMPT_TOKEN = 1


@dataclass(frozen=True, slots=True)
class RequestSpec:
    arrival_s: float
    prompt_len: int
    output_len: int
    slo_class: str


@dataclass(frozen=True, slots=True)
class ClassMix:
    """One class of a preset: its SLO and utility, its share of arrivals, and its length distributions."""

    slo_class: SLOClass
    weight: float
    prompt: LengthDist
    output: LengthDist

    @property
    def name(self) -> str:
        return self.slo_class.name


@dataclass(frozen=True, slots=True)
class Workload:
    """A generated workload: the specs in arrival order plus the classes they name."""

    name: str
    specs: tuple[RequestSpec, ...]
    classes: Mapping[str, SLOClass]
    mix: tuple[ClassMix, ...] = ()

    def describe(self) -> dict:
        """JSON-ready description (no specs) for result files."""
        return {
            "name": self.name,
            "num_requests": len(self.specs),
            "classes": {
                name: {"ttft_s": c.slo.ttft_s, "tpot_s": c.slo.tpot_s, "e2e_s": c.slo.e2e_s, "utility": c.utility}
                for name, c in sorted(self.classes.items())
            },
            "mix": {m.name: {"weight": m.weight, "prompt": str(m.prompt), "output": str(m.output)} for m in self.mix},
        }


def to_requests(specs: Sequence[RequestSpec], classes: Mapping[str, SLOClass], prefix: str = "req") -> list[Request]:
    """Fresh `Request`s for the simulator: dummy prompt tokens, max_tokens = output_len, EOS ignored so each
    request produces exactly output_len tokens unless it is preempted out or aborted."""
    out: list[Request] = []
    for i, spec in enumerate(specs):
        cls = classes.get(spec.slo_class)
        if cls is None:
            raise ValueError(f"request {i} names unknown SLO class {spec.slo_class!r}; "
                             f"known: {', '.join(sorted(classes))}")
        out.append(Request(
            req_id=f"{prefix}-{i}",
            prompt_token_ids=[DUMMY_PROMPT_TOKEN] * spec.prompt_len,
            sampling_params=SamplingParams(max_tokens=spec.output_len, ignore_eos=True),
            arrival_s=spec.arrival_s,
            slo=cls.slo,
            slo_class=cls.name,
            utility=cls.utility,
        ))
    return out
