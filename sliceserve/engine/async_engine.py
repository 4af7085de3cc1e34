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
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from sliceserve.core.scheduler import Scheduler
from sliceserve.engine.core import EngineCore, StepResult
from sliceserve.request import FinishReason, Request

log = logging.getLogger(__name__)

# How long the engine may find nothing to schedule while requests are waiting and none holds KV before it
# gives up on them (a policy bug or an impossible request): they end with an error instead of hanging.
_STALL_LIMIT_S = 5.0
_IDLE_POLL_S = 0.002


@dataclass(slots=True)
class Rejection:
    """Why a request was not admitted. `kind`: invalid (never feasible), overloaded (not now), queue_full."""

    kind: str
    message: str
    retry_after_s: float | None = None


@dataclass(slots=True)
class StreamEvent:
    new_token_ids: list[int]
    finished: bool = False
    finish_reason: FinishReason | None = None
    error: str | None = None
    retry_after_s: float | None = None    # a refusal's hint (queue timeout): when to try again


class EngineObserver(Protocol):
    def on_step(self, step: StepResult, scheduler: Scheduler) -> None: ...
    def on_finish(self, req: Request) -> None: ...


AdmitFn = Callable[[Scheduler, Request, float], Rejection | None]


@dataclass(slots=True)
class RequestStream:
    """Async iterator over one request's events; the last one has `finished=True`."""

    request: Request
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    num_sent: int = 0          # tokens already forwarded (engine thread only)
    done: bool = False

    def __aiter__(self) -> "RequestStream":
        return self

    async def __anext__(self) -> StreamEvent:
        if self.done:
            raise StopAsyncIteration
        event = await self.queue.get()
        # Coalesce what piled up while the consumer was busy: fewer, larger SSE chunks under load.
        while not event.finished and not self.queue.empty():
            more = self.queue.get_nowait()
            event = StreamEvent(event.new_token_ids + more.new_token_ids, more.finished,
                                more.finish_reason, more.error, more.retry_after_s)
        self.done = event.finished
        return event


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
            while True:
                with self._cv:
                    while not (self._adds or self._aborts or self._abort_all or self._stopping
                               or self.core.has_unfinished()):
                        self.last_beat_s = self.clock()
                        if self.idle_work is not None and self.idle_work.due(self.last_beat_s):
                            break
                        self._cv.wait(0.5)
                    if self._stopping:
                        break
                    adds, aborts, abort_all = list(self._adds), list(self._aborts), self._abort_all
                    self._adds.clear()
                    self._aborts.clear()
                    self._abort_all = None
                self._apply_aborts(aborts)
                self._apply_adds(adds)
                if abort_all is not None:
                    self._end_all(abort_all)
                self.last_beat_s = self.clock()
                if self.max_queue_time_s is not None:
                    self._expire_waiting(self.clock())
                self._report_state()   # gauges follow adds, aborts and expiries, not only model steps
                if not self.core.has_unfinished():
                    if self.idle_work is not None and self.idle_work.due(self.clock()):
                        self.idle_work.run(self.clock())
                    continue
                step = self.core.step(self.clock())
                self._dispatch(step)
                if self.observer is not None:
                    self.observer.on_step(step, self.core.scheduler)
                if step.sched.is_empty:
                    stalled_since = self._check_stall(stalled_since)
                    time.sleep(_IDLE_POLL_S)   # nothing runnable now (e.g. a policy waiting): don't spin
                else:
                    stalled_since = None
        except BaseException as exc:  # noqa: BLE001 - the loop must never die silently
            log.exception("engine loop crashed")
            self.fatal = exc
        finally:
            self._fail_everything("server is shutting down" if self.fatal is None else f"engine crashed: {self.fatal}")
            self._report_state()

    def _report_state(self) -> None:
        on_state = getattr(self.observer, "on_state", None)
        if on_state is not None:
            on_state(self.core.scheduler)

    def _apply_aborts(self, req_ids: list[str]) -> None:
        now = self.clock()
        for rid in req_ids:
            req = self.core.scheduler.abort(rid, now)
            if req is not None:
                self._finish_stream(req)

    def _apply_adds(self, adds: list[tuple[Request, asyncio.Future, RequestStream]]) -> None:
        for req, fut, stream in adds:
            now = self.clock()
            verdict = self.admit(self.core.scheduler, req, now) if self.admit is not None else None
            if verdict is not None and verdict.kind == "queue_full":
                verdict = self._displace(req, now, verdict)
            if verdict is None and not self.core.add_request(req, now):
                verdict = Rejection("invalid", req.error or "request rejected")
            if verdict is None:
                self._streams[req.req_id] = stream
            self._resolve(fut, verdict if verdict is not None else stream)

    def _displace(self, req: Request, now: float, full: Rejection) -> Rejection | None:
        """Full waiting queue: refuse its least valuable unstarted request instead of `req`, if `req` is worth
        more and would be admitted in its place (else `req` gets its own answer and the victim stays). Without
        this a flood of low-utility work (an embedding burst) fills the queue and the real-time class is
        refused at the door, however the policy would have ranked it."""
        sched = self.core.scheduler
        victims = [r for r in sched.waiting if r.utility < req.utility and r.num_output_tokens == 0]
        if not victims:
            return full
        victim = min(victims, key=lambda r: (r.utility, -r.arrival_s))   # the newest of the least valuable
        at = sched.waiting.index(victim)
        del sched.waiting[at]          # ask the admit hook as if its place were free (this thread only)
        try:
            verdict = self.admit(sched, req, now)
        finally:
            sched.waiting.insert(at, victim)
        if verdict is None:
            done = sched.abort(victim.req_id, now, FinishReason.REJECTED,
                               error=f"displaced from the full waiting queue by a request of higher utility "
                                     f"({req.utility:g} > {victim.utility:g}); retry later")
            if done is not None:
                self._finish_stream(done)
        return verdict

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
        sched, limit = self.core.scheduler, self.max_queue_time_s
        # Any request still without its first token: waiting, or prefilled and then left paused (SLICE may
        # prefill a best-effort request and never find time to decode it); aborting frees its KV too.
        late = [r for r in sched.requests.values() if r.num_output_tokens == 0 and now - r.arrival_s > limit]
        hint = self.retry_hint(sched) if late and self.retry_hint is not None else None
        for r in late:
            why = (f"no first token within max_queue_time {limit:g} s: the server is overloaded and serves "
                   "higher-value requests first; retry later")
            req = sched.abort(r.req_id, now, FinishReason.REJECTED, error=why)
            if req is not None:
                self._finish_stream(req, hint)

    def _check_stall(self, since: float | None) -> float | None:
        now = self.clock()
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

    def _end_all(self, why: str) -> None:
        now = self.clock()
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
        self._end_all(why)
