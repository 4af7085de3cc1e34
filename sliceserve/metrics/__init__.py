"""Per-request timings, SLO attainment and goodput (Prometheus exposition lives in metrics/prometheus.py)."""
from sliceserve.metrics.goodput import DISTSERVE_TARGET, max_rate_meeting
from sliceserve.metrics.request_metrics import RequestMetrics, request_metrics
from sliceserve.metrics.summary import makespan_s, summarize, summarize_by_class

__all__ = ["DISTSERVE_TARGET", "RequestMetrics", "makespan_s", "max_rate_meeting", "request_metrics", "summarize",
           "summarize_by_class"]
