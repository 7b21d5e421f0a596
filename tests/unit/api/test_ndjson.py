"""Streamed replies as NDJSON: one line per item, a late error as a last line, and the
provider's stream closed when the client goes away."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

from agent.api.ndjson import ndjson
from agent.errors import UpstreamTimeout


class Stream:
    def __init__(self, items: list[Any], error: Exception | None = None) -> None:
        self.items = items
        self.error = error
        self.closed = False

    async def generate(self) -> AsyncGenerator[Any, None]:
        try:
            for item in self.items:
                yield item
            if self.error is not None:
                raise self.error
        finally:
            self.closed = True


async def test_one_json_value_a_line() -> None:
    stream = Stream([{"n": 1}, {"n": "é"}])
    lines = [line async for line in ndjson(stream.generate())]
    assert [json.loads(line) for line in lines] == [{"n": 1}, {"n": "é"}]
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
    assert stream.closed


async def test_an_error_after_the_first_line_is_a_last_error_line() -> None:
    stream = Stream([{"n": 1}], UpstreamTimeout("provider took too long"))
    lines = [line async for line in ndjson(stream.generate())]
    assert len(lines) == 2
    error = json.loads(lines[1])["error"]
    assert error["status"] == 504
    assert "provider took too long" in error["detail"]


async def test_a_client_that_hangs_up_closes_the_providers_stream() -> None:
    stream = Stream([{"n": i} for i in range(10)])
    lines = ndjson(stream.generate())
    assert json.loads(await anext(lines)) == {"n": 0}
    await lines.aclose()  # what the server does when the client is gone
    assert stream.closed
