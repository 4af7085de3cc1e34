"""One request's sampling never hurts its batch: the issue's poison request (temperature 1e-300, which
used to turn every probability in the batch into NaN) is sampled greedily, and a sampler failure forced on
one row ends that request alone with an error while the three innocent streams in the same batch finish
with exactly the text they produce alone."""
from __future__ import annotations

import asyncio
import json

import httpx
import pytest

import sliceserve.model.sampler as sampler_module   # the batched step samples through it (request_sampling)
from tests.server.helpers import LiveServer, make_state

INNOCENT = [{"prompt": "one two three", "max_tokens": 12, "temperature": 0.0},
            {"prompt": "four five", "max_tokens": 12, "temperature": 1.0, "seed": 7},
            {"prompt": "six", "max_tokens": 12, "temperature": 0.8, "top_k": 20, "seed": 11}]


class BatchRecorder:
    """The real runner, slowed a little so requests overlap, remembering the largest batch it ran."""

    def __init__(self, inner) -> None:
        self.inner, self.max_batch = inner, 0
        self.batch_of_seed: dict[int, int] = {}   # seed -> the largest batch a request with it ran in

    def execute(self, sched):
        import time

        self.max_batch = max(self.max_batch, len(sched.requests))
        for req in sched.requests.values():
            seed = req.sampling_params.seed
            if seed is not None:
                self.batch_of_seed[seed] = max(self.batch_of_seed.get(seed, 0), len(sched.requests))
        if not sched.is_empty:
            time.sleep(0.02)
        return self.inner.execute(sched)


@pytest.fixture
def live(tiny_loaded_factory):
    from dataclasses import replace

    loaded = tiny_loaded_factory()
    recorder = BatchRecorder(loaded.runner)
    with LiveServer(make_state(replace(loaded, runner=recorder))) as server:
        server.recorder = recorder
        yield server


async def _stream(client: httpx.AsyncClient, body: dict,
                  first_line: asyncio.Event | None = None) -> tuple[int, str, list[dict]]:
    """(status, text, events) of a streamed completion; `first_line` is set once its first line came."""
    events, text = [], ""
    async with client.stream("POST", "/v1/completions", json={**body, "stream": True, "ignore_eos": True}) as r:
        if r.status_code != 200:
            return r.status_code, (await r.aread()).decode(), []
        lines = []
        async for line in r.aiter_lines():
            if line:
                lines.append(line)
                if first_line is not None:
                    first_line.set()
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        ev = json.loads(line[len("data: "):])
        events.append(ev)
        text += "".join(c.get("text", "") for c in ev.get("choices", []))
    return 200, text, events


async def _together(url: str, bodies: list[dict]) -> list[tuple[int, str, list[dict]]]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return await asyncio.gather(*(_stream(client, b) for b in bodies))


async def _beside_running(url: str, running: list[dict], late: dict) -> list[tuple[int, str, list[dict]]]:
    """`running` streamed together, then `late` sent once each of them has its first token out: its prompt and
    first token then share iterations with them, however the requests would have raced to the server."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        started = [asyncio.Event() for _ in running]
        tasks = [asyncio.create_task(_stream(client, b, e)) for b, e in zip(running, started)]
        await asyncio.gather(*(e.wait() for e in started))
        return [*await asyncio.gather(*tasks, _stream(client, late))]


def _alone(url: str, body: dict) -> str:
    status, text, _ = asyncio.run(_together(url, [body]))[0]
    assert status == 200
    return text


def test_tiny_temperature_beside_three_streams_is_greedy_and_harms_none(live):
    poison = {"prompt": "x", "max_tokens": 4, "temperature": 1e-300}
    expected = [_alone(live.url, b) for b in INNOCENT]
    greedy_x = _alone(live.url, {**poison, "temperature": 0.0})
    results = asyncio.run(_together(live.url, INNOCENT + [poison]))
    assert live.recorder.max_batch >= 4                # they really shared iterations
    assert [r[0] for r in results] == [200] * 4
    assert [r[1] for r in results[:3]] == expected
    assert results[3][1] == greedy_x                    # below 1e-5 a temperature means greedy


def test_a_failing_row_fails_only_its_request(live, monkeypatch):
    real_sample = sampler_module.sample

    def sample(logits, params, seed, index):
        if params.seed == 666:
            raise RuntimeError("probability tensor contains either inf, nan or element < 0")
        return real_sample(logits, params, seed, index)

    expected = [_alone(live.url, b) for b in INNOCENT]
    monkeypatch.setattr(sampler_module, "sample", sample)
    bad = {"prompt": "x", "max_tokens": 8, "temperature": 1.0, "seed": 666}
    results = asyncio.run(_beside_running(live.url, INNOCENT, bad))
    # The failing row ran beside the innocent ones (sent at once, the four raced, and on a fast machine the
    # failing one was once prefilled alone).
    assert live.recorder.batch_of_seed[666] >= 2
    assert [r[0] for r in results[:3]] == [200] * 3
    assert [r[1] for r in results[:3]] == expected
    status, body, _ = results[3]
    # Its first token failed, so no byte of a 200 was sent: a plain 500 naming the cause.
    assert status == 500 and "sampling failed" in json.loads(body)["error"]["message"]
    assert httpx.get(live.url + "/health").status_code == 200
    assert not live.scheduler.requests
