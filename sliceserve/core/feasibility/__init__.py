"""Whether a request's SLO is feasible at its arrival: the estimate behind admission (server/admission.py),
`/ready` and the Retry-After hints (`estimate.py`), with the model of a policy that paces decodes to each
request's TPOT (`paced.py`: SLICE)."""
from sliceserve.core.feasibility.estimate import (LoadEstimate, drain_estimate, estimate_under_load,
                                                   idle_infeasibility, queued_ahead)
from sliceserve.core.feasibility.paced import PacedRow, PacedWait, paced_first_token, paced_load

__all__ = ["LoadEstimate", "PacedRow", "PacedWait", "drain_estimate", "estimate_under_load", "idle_infeasibility",
           "paced_first_token", "paced_load", "queued_ahead"]
