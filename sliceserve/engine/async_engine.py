"""AsyncEngine: EngineCore on the wall clock, driven by one dedicated thread, with per-request async streams.

Why a dedicated thread rather than `asyncio.to_thread` per step: every scheduler mutation (add, abort,
schedule, update) then happens on that one thread, so the scheduler needs no lock, and the event loop never
waits for a model step. The event loop only enqueues commands (add / abort) and reads events from
per-request `asyncio.Queue`s that the engine thread fills through `call_soon_threadsafe`.

Nothing accepted is dropped silently: every admitted request ends with a final event carrying its
finish reason (stop, length, abort, error); a refused one gets a `Rejection` instead of a stream.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from typing import Any, Callable

from sliceserve.core.scheduler import Scheduler
from sliceserve.engine.core import EngineCore, StepResult
from sliceserve.engine.door import admit_or_displace, end_late, late_requests
from sliceserve.engine.hooks import AdmitFn, EngineObserver, Rejection
from sliceserve.engine.streams import RequestStream, StreamEvent
from sliceserve.request import FinishReason, Request

__all__ = ["AdmitFn", "AsyncEngine", "EngineObserver", "Rejection", "RequestStream", "StreamEvent"]

log = logging.getLogger(__name__)

# How long the engine may find nothing to schedule while requests are waiting and none holds KV before it
# gives up on them (a policy bug or an impossible request): they end with an error instead of hanging.
_STALL_LIMIT_S = 5.0
_IDLE_POLL_S = 0.002


class AsyncEngine:
    def __init__(self, core: EngineCore, admit: AdmitFn | None = None, observer: EngineObserver | None = None,
                 clock: Callable[[], float] = time.monotonic, max_queue_time_s: float | None = None) -> None:
        self.core = core
        # A request still without its first token after this long is refused (FinishReason.REJECTED,
        # the HTTP layer answers 503 + Retry-After): under sustained overload a policy that serves by utility
        # (SLICE) may never reach low-value work, and a client must get an answer rather than wait forever.
        self.max_queue_time_s = max_queue_time_s
        self.admit = admit
        self.observer = observer
        self.clock = clock
        self._cv = threading.Condition()
        self._adds: deque[tuple[Request, asyncio.Future, RequestStream]] = deque()
        self._aborts: deque[str] = deque()
        self._abort_all: str | None = None               # set by abort_all: end everything with this error
        self._streams: dict[str, RequestStream] = {}     # engine thread only
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        # Scheduler -> seconds until the queue has room: the Retry-After of requests that time out waiting.
        self.retry_hint: Callable[[Scheduler], float] | None = None
        self.last_beat_s = 0.0       # wall time of the loop's last pass: readiness checks it
        # Work for idle gaps (sliceserve.engine.reprofile: due(now) -> bool, run(now)): runs on this thread
        # only while nothing is admitted, outside the lock, so arrivals queue for it rather than block.
        self.idle_work: Any = None
        self.fatal: BaseException | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="sliceserve-engine", daemon=True)
        self.last_beat_s = self.clock()
        self._thread.start()

    def shutdown(self, timeout_s: float = 5.0) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    # --- commands from the event loop --------------------------------------------------------------------
    async def add_request(self, req: Request) -> RequestStream | Rejection:
        """Submit `req`; returns its stream once the engine thread admitted it, or why it refused."""
        if not self.is_alive:
            return Rejection("unavailable", "engine is not running")
        fut = asyncio.get_running_loop().create_future()
        stream = RequestStream(req)
        with self._cv:
            self._adds.append((req, fut, stream))
            self._cv.notify_all()
        return await fut

    def abort(self, req_id: str) -> None:
        """Thread-safe; the request's KV is freed at the start of the engine's next pass."""
        with self._cv:
            self._aborts.append(req_id)
            self._cv.notify_all()

    def abort_all(self, why: str) -> None:
        """Thread-safe: end every admitted request with an error (shutdown past its timeout)."""
        with self._cv:
            self._abort_all = why
            self._cv.notify_all()

    # --- engine thread -----------------------------------------------------------------------------------
    def _run(self) -> None:
        stalled_since: float | None = None
        try:
            while (commands := self._take_commands()) is not None:
                # The pass's one clock read: admission, aborts, expiry, the step and the stall check all
                # see this `now` (a step's tokens are stamped now + the model's measured seconds).
                now = self.clock()
                self.last_beat_s = now
                stalled_since = self._pass(now, *commands, stalled_since)
        except BaseException as exc:  # noqa: BLE001 - the loop must never die silently
            log.exception("engine loop crashed")
            self.fatal = exc
        finally:
            self._fail_everything("server is shutting down" if self.fatal is None else f"engine crashed: {self.fatal}")
            self._report_state()

    def _take_commands(self) -> tuple[list, list[str], str | None] | None:
        """Wait until there is something to do; the commands queued since the last pass (None: stop)."""
        with self._cv:
            while not (self._adds or self._aborts or self._abort_all or self._stopping
                       or self.core.has_unfinished()):
                self.last_beat_s = self.clock()   # idle, not a pass: readiness still sees a live loop
                if self.idle_work is not None and self.idle_work.due(self.last_beat_s):
                    break                         # an idle gap is due its work (a drift re-profile)
                self._cv.wait(0.5)
            if self._stopping:
                return None
            commands = list(self._adds), list(self._aborts), self._abort_all
            self._adds.clear()
            self._aborts.clear()
            self._abort_all = None
        return commands

    def _pass(self, now: float, adds: list, aborts: list[str], abort_all: str | None,
              stalled_since: float | None) -> float | None:
        """One pass at time `now`: commands, queue expiry, then one step. Returns when the scheduler began
        to find nothing runnable while requests wait (None: it is not stalled)."""
        self._apply_aborts(aborts, now)
        self._apply_adds(adds, now)
        if abort_all is not None:
            self._end_all(abort_all, now)
        if self.max_queue_time_s is not None:
            self._expire_waiting(now)
        self._report_state()   # gauges follow adds, aborts and expiries, not only model steps
        if not self.core.has_unfinished():
            if self.idle_work is not None and self.idle_work.due(now):
                self.idle_work.run(now)
            return stalled_since
        step = self.core.step(now)
        self._dispatch(step)
        if self.observer is not None:
            self.observer.on_step(step, self.core.scheduler)
        if not step.sched.is_empty:
            return None
        time.sleep(_IDLE_POLL_S)   # nothing runnable now (e.g. a policy waiting): don't spin
        return self._check_stall(stalled_since, now)

    def _report_state(self) -> None:
        on_state = getattr(self.observer, "on_state", None)
        if on_state is not None:
            on_state(self.core.scheduler)

    def _apply_aborts(self, req_ids: list[str], now: float) -> None:
        for rid in req_ids:
            req = self.core.scheduler.abort(rid, now)
            if req is not None:
                self._finish_stream(req)

    def _apply_adds(self, adds: list[tuple[Request, asyncio.Future, RequestStream]], now: float) -> None:
        for req, fut, stream in adds:
            verdict, displaced = admit_or_displace(self.core.scheduler, self.admit, req, now)
            if displaced is not None:
                self._finish_stream(displaced)
            if verdict is None and not self.core.add_request(req, now):
                verdict = Rejection("invalid", req.error or "request rejected")
            if verdict is None:
                self._streams[req.req_id] = stream
            self._resolve(fut, verdict if verdict is not None else stream)

    def _resolve(self, fut: asyncio.Future, value: object) -> None:
        def settle() -> None:
            if not fut.done():
                fut.set_result(value)
            elif isinstance(value, RequestStream):   # the waiter went away: don't leak the request
                self.abort(value.request.req_id)
        self._post(settle)

    def _post(self, fn: Callable, *args: object) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:   # the event loop closed first (shutdown): nobody is listening any more
            pass

    def _dispatch(self, step: StepResult) -> None:
        for rid in step.sched.requests:
            stream = self._streams.get(rid)
            if stream is None or stream.request.status.is_finished:
                continue
            new = stream.request.output_token_ids[stream.num_sent:]
            if new:
                stream.num_sent += len(new)
                self._post(stream.queue.put_nowait, StreamEvent(list(new)))
        for req in step.finished:
            self._finish_stream(req)

    def _finish_stream(self, req: Request, retry_after_s: float | None = None) -> None:
        stream = self._streams.pop(req.req_id, None)
        if stream is None:
            return
        new = req.output_token_ids[stream.num_sent:]
        stream.num_sent += len(new)
        event = StreamEvent(list(new), True, req.finish_reason, req.error, retry_after_s)
        self._post(stream.queue.put_nowait, event)
        if self.observer is not None:
            self.observer.on_finish(req)

    def _expire_waiting(self, now: float) -> None:
        """503 for every request past the queue's time limit (`door.late_requests`), with a Retry-After hint."""
        sched = self.core.scheduler
        late = late_requests(sched, now, self.max_queue_time_s)
        hint = self.retry_hint(sched) if late and self.retry_hint is not None else None
        for req in end_late(sched, late, self.max_queue_time_s, now):
            self._finish_stream(req, hint)

    def _check_stall(self, since: float | None, now: float) -> float | None:
        sched = self.core.scheduler
        if sched.running:           # someone holds KV: the policy is pacing, not stuck
            return None
        if since is None:
            return now
        if now - since > _STALL_LIMIT_S:
            for rid in list(sched.requests):
                req = sched.abort(rid, now, FinishReason.ERROR, error="scheduler could not make progress")
                if req is not None:
                    self._finish_stream(req)
            return None
        return since

    def _end_all(self, why: str, now: float) -> None:
        for rid in list(self.core.scheduler.requests):
            req = self.core.scheduler.abort(rid, now, FinishReason.ERROR, error=why)
            if req is not None:
                self._finish_stream(req)

    def _fail_everything(self, why: str) -> None:
        with self._cv:
            adds = list(self._adds)
            self._adds.clear()
            self._stopping = True
        for _, fut, _ in adds:
            self._resolve(fut, Rejection("unavailable", why))
        self._end_all(why, self.clock())
