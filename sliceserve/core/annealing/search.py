"""Simulated annealing over (order of waiting requests, batch size), maximising G (Huang et al., 2025).

Moves: swap two requests of the order, or change the batch size by one. Acceptance is Metropolis on the
*relative* change of G, so one temperature scale works whatever the magnitude of G (which is in 1/s and
shrinks as queues grow): a candidate with G' >= G is always taken, a worse one with probability
exp((G' - G) / (G * T)). The temperature cools geometrically, T_k = t0 * cooling**k, and the best state
seen is returned (so the result is never worse than the start, the warm-started previous order).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

from sliceserve.core.annealing.objective import SearchProblem


@dataclass(frozen=True, slots=True)
class AnnealParams:
    iterations: int = 100
    t0: float = 0.05
    cooling: float = 0.95
    batch_move_prob: float = 0.2


@dataclass(slots=True)
class AnnealResult:
    order: list[int]          # indices into the problem's waiting jobs, a permutation of the input order
    batch_size: int
    objective: float
    initial_objective: float
    evaluations: int


def _accept(new: float, cur: float, temperature: float, rng: random.Random) -> bool:
    if new >= cur:
        return True
    if cur <= 0:
        return False
    return rng.random() < math.exp((new - cur) / (cur * temperature))


def anneal(problem: SearchProblem, order: list[int], batch_size: int, params: AnnealParams,
           rng: random.Random) -> AnnealResult:
    """Search from the state (`order`, `batch_size`); returns the best state evaluated."""
    max_b = problem.max_batch
    batch_size = max(1, min(max_b, batch_size))
    cur = list(order)
    cur_b = batch_size
    cur_g = problem.objective(cur, cur_b)
    best, best_b, best_g = list(cur), cur_b, cur_g
    initial_g = cur_g
    n = len(cur)
    evaluations = 1
    if n < 2 and max_b < 2:
        return AnnealResult(best, best_b, best_g, initial_g, evaluations)  # nothing can move
    temperature = params.t0
    for _ in range(params.iterations):
        if n < 2 or (max_b > 1 and rng.random() < params.batch_move_prob):
            step = rng.choice((-1, 1))
            cand_b = cur_b + step if 1 <= cur_b + step <= max_b else cur_b - step
            g = problem.objective(cur, cand_b)
            if _accept(g, cur_g, temperature, rng):
                cur_b, cur_g = cand_b, g
        else:
            i, j = rng.sample(range(n), 2)
            cur[i], cur[j] = cur[j], cur[i]  # in place; undone on rejection
            g = problem.objective(cur, cur_b)
            if _accept(g, cur_g, temperature, rng):
                cur_g = g
            else:
                cur[i], cur[j] = cur[j], cur[i]
        evaluations += 1
        if cur_g > best_g:
            best, best_b, best_g = list(cur), cur_b, cur_g
        temperature *= params.cooling
    return AnnealResult(best, best_b, best_g, initial_g, evaluations)
