"""Settings of the LB policies that have some (pydantic models, validated with the config).

A module of its own, interpreted: agent/cluster/lb.py is compiled by mypyc, which cannot
compile pydantic models (their class attributes hold ``Field``s).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class ConsistentHashConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # What the key is: the client's address for TCP; protocols may offer more sources
    # (a header, an argument) through the same setting.
    hash_on: Annotated[str, Field(min_length=1)] = "source_ip"
    # Virtual nodes per unit of weight/100 (a host of weight 100 gets this many points).
    virtual_nodes: Annotated[int, Field(ge=1, le=1024)] = 160
    algorithm: Literal["ring"] = "ring"
