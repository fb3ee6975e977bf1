"""Chat messages to one prompt through a template; the default is AXL's `User: ...\nAssistant: ` format."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from multiscale_transformer.errors import UserError
from multiscale_transformer.serving.protocol import ChatMessage


@dataclass(frozen=True)
class ChatTemplate:
    """Per-role formats ({content} is replaced), the prompt that opens the reply, and default stops.

    The system message goes first, followed by a blank line, as in the published Ollama Modelfile
    (`{{ .System }}\\n\\nUser: {{ .Prompt }}\\nAssistant: `). "developer" counts as system; tool
    and function results are shown to the model as user turns.
    """

    system: str = "{content}\n\n"
    user: str = "User: {content}\n"
    assistant: str = "Assistant: {content}\n"
    generation_prompt: str = "Assistant: "
    # Without a stop the model would go on to write the user's next turn itself.
    stop: list[str] = field(default_factory=lambda: ["\nUser:"])

    def render(self, messages: list[ChatMessage]) -> str:
        parts = []
        for message in messages:
            role = {"developer": "system", "tool": "user", "function": "user"}.get(message.role, message.role)
            parts.append(getattr(self, role).replace("{content}", message.text()))
        return "".join(parts) + self.generation_prompt

    @classmethod
    def from_file(cls, path: str | Path) -> ChatTemplate:
        """A JSON object with any of the fields: system, user, assistant, generation_prompt, stop."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot read the chat template {path}: {exc}") from None
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) - names:
            raise UserError(f"the chat template {path} must be a JSON object with keys among {sorted(names)}")
        if not all(isinstance(data[k], str) for k in data if k != "stop") or not isinstance(data.get("stop", []), list):
            raise UserError(f"the chat template {path}: formats must be strings and stop a list of strings")
        return cls(**data)
