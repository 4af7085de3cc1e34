"""Execution: the Executor protocol, EngineCore (schedule -> execute -> update), and front ends."""
