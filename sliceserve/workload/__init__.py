"""Seeded workloads: arrival processes x length distributions x SLO-class mixes, presets, trace replay."""
from sliceserve.workload.arrivals import arrival_times
from sliceserve.workload.lengths import LengthDist, parse_length_dist
from sliceserve.workload.presets import PRESETS, generate, get_preset, parse_mix_weights, with_slo_overrides
from sliceserve.workload.spec import ClassMix, RequestSpec, Workload, to_requests
from sliceserve.workload.trace import load_trace, read_trace_rows

__all__ = [
    "ClassMix", "LengthDist", "PRESETS", "RequestSpec", "Workload", "arrival_times", "generate", "get_preset",
    "load_trace", "parse_length_dist", "parse_mix_weights", "read_trace_rows", "to_requests", "with_slo_overrides",
]
