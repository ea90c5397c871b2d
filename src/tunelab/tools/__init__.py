"""Tool calling: the formats a chat template writes calls in, and the parser that reads them back.

- `formats`: one `ToolFormat` per family (hermes/Qwen `<tool_call>`, Llama 3.1 JSON, Mistral
  `[TOOL_CALLS]`, Gemma ```tool_call blocks); `ChatTemplate.tool_format` names the template's.
- `messages`: OpenAI-shaped conversations (assistant `tool_calls`, `tool` replies) checked and
  normalized once, and lowered to plain turns for templates without native tool support.
- `parser`: `ToolCallParser`, incremental, turns model output into content plus `ToolCall`s.
"""

from tunelab.tools.formats import FORMATS, ToolFormat, get_format
from tunelab.tools.parser import ParsedDelta, ToolCall, ToolCallDelta, ToolCallParser, parse_tool_calls

__all__ = ["FORMATS", "ToolFormat", "get_format", "ToolCall", "ToolCallDelta", "ParsedDelta",
           "ToolCallParser", "parse_tool_calls"]
