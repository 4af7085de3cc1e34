"""Helpers of the `annealing` policy (Huang et al., 2025): the per-class output-length estimate, the
objective G evaluated by a fast batch simulation, and the simulated-annealing search itself."""
from sliceserve.core.annealing.lengths import OutputLengthEstimator
from sliceserve.core.annealing.objective import Job, SearchProblem
from sliceserve.core.annealing.search import AnnealParams, AnnealResult, anneal

__all__ = ["AnnealParams", "AnnealResult", "Job", "OutputLengthEstimator", "SearchProblem", "anneal"]
