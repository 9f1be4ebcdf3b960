"""Tools that refuse what they don't understand, and say so in one line.

The SDK builds each tool's argument model from its signature with pydantic's default,
which ignores unknown keys: a misspelled ``tag`` stored an untagged memory, and the
original Vestige's ``forceCreate`` reinforced where ``force_create`` would have created.
``strict_tool`` is the one place that changes this for every tool: the argument model
forbids extra keys (``additionalProperties: false`` in the published schema) and validates
strictly (pydantic would take ``"5"``, ``true`` or ``5.0`` for ``limit: 5``, and ``"yes"``
or ``1`` for ``true``, against the published schema; a JSON integer is still a number), the
description loses its docstring indentation, and ``StrictTool.run`` answers a bad call
with ``argument_errors``' one line instead of "Error executing tool ...: <pydantic dump>".
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any

from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools.base import Tool
from pydantic import ConfigDict, ValidationError

from vestige.server import argument_errors

if TYPE_CHECKING:
    from collections.abc import Callable

    from mcp.server.mcpserver import Context
    from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase
    from mcp.types import ToolAnnotations

log = logging.getLogger("vestige.server.tools")


class StrictTool(Tool):
    """A tool whose failures reach the client as their own message, without a prefix."""

    async def run(
        self,
        arguments: dict[str, Any],
        context: Context[Any, Any],
        convert_result: bool = False,
    ) -> Any:
        try:
            validated = self.fn_metadata.validate_arguments(arguments)
        except ValidationError as exc:
            raise ToolError(argument_errors.explain(exc, self.parameters)) from exc
        direct = {self.context_kwarg: context} if self.context_kwarg else {}
        # The function is wrapped by tools._guard: what it raises is already a ToolError
        # with a readable message.
        result = await self.fn_metadata.call_fn(self.fn, self.is_async, validated, direct)
        if not convert_result:
            return result
        try:
            return self.fn_metadata.convert_result(result)
        except ValidationError as exc:  # a result that breaks its own schema: a bug here
            log.exception("tool %s returned a result its output schema refuses", self.name)
            raise ToolError(
                f"internal error: the {self.name} result did not match its output schema "
                f"({exc.error_count()} problems); the server log has the details"
            ) from None


def strict_tool(fn: Callable[..., Any], annotations: ToolAnnotations) -> StrictTool:
    """``fn`` as a tool that forbids unknown arguments and publishes its result schema."""
    tool = StrictTool.from_function(
        fn,
        description=inspect.cleandoc(fn.__doc__ or ""),
        annotations=annotations,
        structured_output=True,
    )
    if tool.resolved_params:
        raise TypeError(f"{tool.name}: Resolve(...) parameters are not supported here")
    loose = tool.fn_metadata.arg_model
    strict: type[ArgModelBase] = type(
        loose.__name__, (loose,), {"model_config": ConfigDict(extra="forbid", strict=True)}
    )
    tool.fn_metadata.arg_model = strict
    tool.parameters = strict.model_json_schema(by_alias=True)
    assert isinstance(tool, StrictTool)
    return tool
