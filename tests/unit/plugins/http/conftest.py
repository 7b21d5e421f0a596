"""Fixtures of the HTTP listener's in-process tests: providers and agents, stopped after."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from agent.config import parse_config
from agent.runtime.agent import Agent
from tests.support.http_providers import Provider, RawProvider


@pytest.fixture
async def providers() -> AsyncIterator[Callable[..., Any]]:
    started: list[Provider] = []

    async def start(name: str, mode: str = "ok") -> Provider:
        provider = await Provider(name, mode).start()
        started.append(provider)
        return provider

    yield start
    for provider in started:
        await provider.stop()


@pytest.fixture
async def agents() -> AsyncIterator[Callable[..., Any]]:
    started: list[Agent] = []

    async def start(raw: dict[str, Any]) -> Agent:
        agent = Agent(parse_config(raw))
        await agent.start()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        await agent.stop()


@pytest.fixture
async def raw_provider() -> AsyncIterator[Callable[..., Any]]:
    started: list[RawProvider] = []

    async def start(answers: dict[bytes, bytes]) -> RawProvider:
        provider = await RawProvider(answers).start()
        started.append(provider)
        return provider

    yield start
    for provider in started:
        await provider.stop()
