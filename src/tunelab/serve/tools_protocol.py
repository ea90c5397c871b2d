"""Request schemas for tools and structured outputs (OpenAI and Ollama), and their one mapping
onto the engine's `StructuredOutputsParams`.

`response_format` (`json_object`, `json_schema`) and Ollama's `format` (`"json"` or a schema)
become a constraint here; `tool_choice` `required`/named becomes one in `serve/tool_calls.py`,
which knows the template's call format. An invalid schema is a 400 naming its field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from tunelab.engine.structured import StructuredOutputsParams
from tunelab.errors import InvalidRequest
from tunelab.serve.strict import RequestModel

FunctionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]


def _object_schema(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and value.get("type", "object") != "object":
        raise ValueError("a function's parameters must be a JSON schema of type 'object'")
    return value


class FunctionDefinition(RequestModel):
    """A function the model may call."""

    name: FunctionName
    description: str | None = None
    parameters: Annotated[dict[str, Any] | None, AfterValidator(_object_schema)] = None
    strict: bool | None = None  # arguments always follow `parameters` when the call is constrained


class ToolDefinition(RequestModel):
    """One entry of `tools` (OpenAI and Ollama share this shape)."""

    type: Literal["function"] = "function"
    function: FunctionDefinition

    def as_dict(self) -> dict[str, Any]:
        """The tool as the chat template takes it."""
        return self.model_dump(exclude_none=True)


class FunctionCallIn(RequestModel):
    """A call in an earlier assistant turn (OpenAI: arguments are a JSON string; Ollama: an object)."""

    name: str
    arguments: str | dict[str, Any] = "{}"
    index: int | None = None  # Ollama numbers parallel calls


class ToolCallIn(RequestModel):
    """An entry of an assistant turn's `tool_calls`."""

    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCallIn

    def as_dict(self, i: int) -> dict[str, Any]:
        """The call as the chat template takes it (`tunelab.tools.messages`)."""
        return {"id": self.id or f"call_{i}", "type": "function",
                "function": {"name": self.function.name, "arguments": self.function.arguments}}


class NamedFunction(RequestModel):
    """`tool_choice.function`."""

    name: str


class NamedToolChoice(RequestModel):
    """`tool_choice` naming one function: the reply is a call to it."""

    type: Literal["function"] = "function"
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class JsonSchemaFormat(RequestModel):
    """`response_format.json_schema`."""

    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] | bool | None = Field(None, alias="schema")
    strict: bool | None = None  # the reply always follows the schema: it is enforced by decoding


class ResponseFormat(RequestModel):
    """`response_format`: plain text, any JSON object, or JSON following a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    def constraint(self) -> StructuredOutputsParams | None:
        """The engine's constraint for this format; a schema that does not compile is a 400."""
        if self.type == "text":
            return None
        if self.type == "json_object":
            return StructuredOutputsParams(json_object=True, param="response_format")
        if self.json_schema is None:
            raise InvalidRequest("response_format.json_schema is required when type is 'json_schema'",
                                 param="response_format.json_schema")
        schema = self.json_schema.schema_ if self.json_schema.schema_ is not None else {}
        return _checked(StructuredOutputsParams(json=schema, param="response_format.json_schema.schema"))


def ollama_format(value: Any) -> StructuredOutputsParams | None:
    """Ollama's `format`: "json", a JSON schema object, or nothing."""
    if value in (None, ""):
        return None
    if value == "json":
        return StructuredOutputsParams(json_object=True, param="format")
    if isinstance(value, dict):
        return _checked(StructuredOutputsParams(json=value, param="format"))
    raise InvalidRequest("format must be \"json\" or a JSON schema object", param="format")


def _checked(params: StructuredOutputsParams) -> StructuredOutputsParams:
    params.check()
    return params
