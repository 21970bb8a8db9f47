"""Tools that exist only for tests: loaded as plugins (module path, entry point) or registered directly."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, Field

from llmlab_grpc.tools.base import Tool, ToolFailure


class TextIn(BaseModel):
    text: str = Field(max_length=100)


class TextOut(BaseModel):
    text: str


class EchoTool(Tool):
    """Returns its input; proves a plugin loaded and ran where the router sent it."""

    name = "echo"
    description = "Echo the text back."
    capabilities = ("test", "text")
    input_model = TextIn
    output_model = TextOut
    timeout_s = 5.0

    async def execute(self, **kwargs: Any) -> dict[str, Any]:
        return {"text": kwargs["text"]}


class ShoutTool(EchoTool):
    """Upper-cases its input; shipped to node processes through an ``llmlab.tools`` entry point."""

    name = "shout"
    description = "Shout the text back."
    capabilities = ("test",)

    async def execute(self, **kwargs: Any) -> dict[str, Any]:
        return {"text": kwargs["text"].upper()}


class SleepIn(BaseModel):
    seconds: float = Field(ge=0, le=60)


class SleepOut(BaseModel):
    slept: float


class NapTool(Tool):
    """Sleeps as asked, with a short own timeout: exercises tool timeouts end to end."""

    name = "nap"
    description = "Sleep for the given seconds (limit 0.5 s)."
    capabilities = ("test",)
    input_model = SleepIn
    output_model = SleepOut
    timeout_s = 0.5

    async def execute(self, **kwargs: Any) -> dict[str, Any]:
        await asyncio.sleep(kwargs["seconds"])
        return {"slept": kwargs["seconds"]}


class SleepyTool(Tool):
    """Same name on several nodes, a different built-in delay on each: exercises deadline failover."""

    name = "sleepy"
    description = "Answer after this node's delay."
    capabilities = ("test",)
    input_model = TextIn
    output_model = TextOut
    timeout_s = 30.0

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s

    async def execute(self, **kwargs: Any) -> dict[str, Any]:
        await asyncio.sleep(self.delay_s)
        return {"text": kwargs["text"]}


class BrokenTool(EchoTool):
    """Raises a bug (not a ToolFailure): the server must answer an error result, not crash."""

    name = "broken"

    async def execute(self, **kwargs: Any) -> dict[str, Any]:
        raise KeyError("bug")


class RefusingTool(EchoTool):
    """Fails the expected way."""

    name = "refusing"

    async def execute(self, **kwargs: Any) -> dict[str, Any]:
        raise ToolFailure("REFUSED", "not today")


class AttachmentTool(EchoTool):
    """Returns a small binary attachment, as the browser's screenshot does."""

    name = "attach"

    async def execute(self, **kwargs: Any) -> dict[str, Any]:
        return {"text": kwargs["text"], "_attachments": [("note.txt", "text/plain", kwargs["text"].encode())]}
