"""The Ollama Modelfile written next to an exported GGUF (tests/modelfile.py checks it is well-formed)."""

from __future__ import annotations

import json

# The server's chat prompt: an optional system text, then "User: ...\nAssistant: ".
CHAT_TEMPLATE = "{{ if .System }}{{ .System }}\n\n{{ end }}User: {{ .Prompt }}\nAssistant: "

# A FIM-trained model: Ollama fills {{ .Suffix }} when a request has one (its `suffix` field); the
# layout is generation/fim.py's, written with the GGUF's control-token texts (export/vocab.py).
FIM_TEMPLATE = (
    "{{ if .Suffix }}<|eos|><fim_prefix><fim_suffix>{{ .Suffix }}<fim_middle>{{ .Prompt }}"
    "{{ else }}" + CHAT_TEMPLATE + "{{ end }}"
)

# The server stops a chat reply at "\nUser:"; "User:" says the same without relying on escapes in Modelfile strings.
CHAT_STOP = "User:"


def render_modelfile(
    gguf_name: str, num_ctx: int, stop: str, sampling: dict[str, float | int], fim: bool = False
) -> str:
    """Modelfile text: FROM the file next to it, the chat template (with the infilling layout for a
    FIM-trained model), sampling defaults, context, stops (the EOS token's text and the start of a
    next user turn)."""
    lines = [
        "# Ollama: ollama create NAME -f Modelfile  (run in this directory), then ollama run NAME",
        f"FROM ./{gguf_name}",
        f'TEMPLATE """{FIM_TEMPLATE if fim else CHAT_TEMPLATE}"""',
    ]
    lines += [f"PARAMETER {key} {value}" for key, value in sampling.items()]
    lines += [f"PARAMETER num_ctx {num_ctx}"]
    lines += [f"PARAMETER stop {json.dumps(text)}" for text in (stop, CHAT_STOP)]
    return "\n".join(lines) + "\n"
