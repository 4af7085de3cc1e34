"""Run workloads and report: simulator comparisons (compare), rate sweeps (sweep), tables (report), plots (plot)."""
