"""Resource monitor, latency tracking, SLO constraints and the closed-loop feedback controller."""
