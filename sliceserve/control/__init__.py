"""Resource monitor, latency tracking and the closed-loop feedback controller (SLO constraints: sliceserve.slo)."""
