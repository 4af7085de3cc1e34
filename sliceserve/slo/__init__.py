"""Service-level objectives: one grammar for SLO text, typed constraints, per-request bounds and classes.

`parse_slo("p99 ttft <= 350ms, tpot <= 80ms")` gives a `ConstraintSet` of typed `Constraint`s in SI units;
`.request_slo()` is the `SLO` a request carries, `.targets()` what the feedback controller watches, and
`parse_slo(expr, scope)` refuses a term the scope ("request", "class", "server") cannot enforce.
Layout: units.py (units <-> SI), terms.py (metrics, constraints, scopes), grammar.py (the parser),
bounds.py (SLO, SLOClass, the built-in classes).
"""
from sliceserve.slo.bounds import BUILTIN_CLASSES, FLOAT_SLACK_S, SLO, SLOClass
from sliceserve.slo.grammar import ConstraintSet, parse_slo, parse_term
from sliceserve.slo.terms import METRICS, SCOPES, Constraint, Metric, Scope
from sliceserve.slo.units import parse_duration, parse_size

__all__ = ["BUILTIN_CLASSES", "FLOAT_SLACK_S", "METRICS", "SCOPES", "SLO", "Constraint", "ConstraintSet", "Metric",
           "SLOClass", "Scope", "parse_duration", "parse_size", "parse_slo", "parse_term"]
