"""Discrete-event simulation: the real scheduler and EngineCore on a virtual clock."""
from sliceserve.sim.executor import SimulatedExecutor
from sliceserve.sim.simulator import SimResult, Simulator

__all__ = ["SimulatedExecutor", "SimResult", "Simulator"]
