"""SlidingServe's mechanisms (2026 seed paper; docs: ../shared/docs/PEERS.md), one concept per module:
predictor (batch latency, per regime, fitted online), sorter (multi-level priority key), chunker
(two-iteration lookahead chunk choice), constructor (the BatchConstructor: when and over what the knapsack
runs) and knapsack (exact 0/1 selection).
The policy that wires them together is sliceserve/core/policies/sliding.py."""
