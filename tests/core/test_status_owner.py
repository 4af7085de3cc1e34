"""Only the scheduler changes a request's status (issue 20).

Behaviour: every way a request can end outside an iteration (refused at admission, cut off by a driver's time
limit before or after it arrived) ends it through `Scheduler`, with its reason, time and error. Statically: no
module in `sliceserve/` but the allow-listed one assigns `status`, `finish_reason` or `finished_s` on another
object; a new place that ends requests must call a `Scheduler` method instead.
"""
from __future__ import annotations

import ast
from pathlib import Path

import sliceserve
from sliceserve.core.latency import BUILTIN_PROFILES
from sliceserve.core.scheduler import Scheduler
from sliceserve.engine.core import EngineCore
from sliceserve.request import FinishReason, Request, RequestStatus, SamplingParams
from sliceserve.sim import SimulatedExecutor, Simulator
from tests.core.schedhelpers import scheduler

_OWNED = ("status", "finish_reason", "finished_s")
# The one module allowed to write them (relative to sliceserve/). Objects assigning their own unrelated
# attribute of that name (`self.status` of an HTTP error, of a /proc reader) are not requests: `self.` is skipped.
_ALLOWED = {"core/scheduler.py"}
_ROOT = Path(sliceserve.__file__).parent


def _writes(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr"
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and node.args[1].value in _OWNED):
            found.append((node.lineno, f"setattr(..., {node.args[1].value!r})"))
        while targets:
            t = targets.pop()
            if isinstance(t, (ast.Tuple, ast.List)):
                targets.extend(t.elts)
            elif (isinstance(t, ast.Attribute) and t.attr in _OWNED
                  and not (isinstance(t.value, ast.Name) and t.value.id == "self")):
                found.append((t.lineno, f"{ast.unparse(t)} ="))
    return found


def test_no_module_but_the_scheduler_writes_request_status():
    offenders = []
    for path in sorted(_ROOT.rglob("*.py")):
        rel = path.relative_to(_ROOT).as_posix()
        if rel not in _ALLOWED:
            offenders += [f"{rel}:{line}: {what}" for line, what in _writes(ast.parse(path.read_text()))]
    assert offenders == []


def test_the_static_check_sees_every_form_of_write():
    code = ("req.status = X\nreq.status, req.finish_reason = X, Y\nr.finished_s += 1\n"
            "setattr(req, 'status', X)\nself.status = 404\nreq.statusbar = 1\n")
    assert [line for line, _ in _writes(ast.parse(code))] == [1, 2, 2, 3, 4]
    # And the scheduler module itself does write them (the allow-list names a real owner).
    assert _writes(ast.parse((_ROOT / "core/scheduler.py").read_text()))


def test_end_unadmitted_records_reason_time_and_error():
    req = Request("r", [1, 2], SamplingParams(max_tokens=1), arrival_s=0.0)
    Scheduler.end_unadmitted(req, FinishReason.ABORT, 4.5, "cut off")
    assert (req.status, req.finish_reason, req.finished_s, req.error) == (
        RequestStatus.FINISHED, FinishReason.ABORT, 4.5, "cut off")


def test_admission_refusal_ends_the_request_through_the_scheduler():
    sched = scheduler("vllm", max_model_len=64)
    req = Request("big", [1] * 100, SamplingParams(max_tokens=10), arrival_s=0.0)
    assert not sched.add_request(req, 2.0)
    assert (req.status, req.finish_reason, req.finished_s) == (RequestStatus.FINISHED, FinishReason.REJECTED, 2.0)
    assert "max_model_len" in req.error and "big" not in sched.requests


def test_simulator_time_limit_ends_running_and_unarrived_requests():
    device = BUILTIN_PROFILES["paper-4060ti"]
    core = EngineCore(scheduler("vllm", latency=device.copy()), SimulatedExecutor(device.copy()))
    sim = Simulator(core, max_time_s=1.0)
    long = Request("long", [1] * 8, SamplingParams(max_tokens=1000, ignore_eos=True), arrival_s=0.0)
    late = Request("late", [1] * 8, SamplingParams(max_tokens=4), arrival_s=50.0)
    sim.add_arrivals([long, late])
    result = sim.run()
    assert [r.req_id for r in result.requests] == ["long", "late"]
    for req in (long, late):
        assert req.status is RequestStatus.FINISHED and req.finish_reason is FinishReason.ABORT
        assert "simulation limit" in req.error and req.finished_s >= 1.0
    assert late.num_output_tokens == 0 and long.num_output_tokens > 0
    assert not core.scheduler.requests    # the running one left the scheduler (its KV freed)
    assert core.scheduler.kv.num_free_blocks == core.scheduler.kv.num_blocks
