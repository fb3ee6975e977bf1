"""A checker for the Modelfile that `axl export-gguf` writes (test-only).

It follows Ollama's documented Modelfile syntax (one `INSTRUCTION arguments` per line, `#` comments,
values in "..." or multi-line \"\"\"...\"\"\") and the documented parameter types, so a test can hold
the file we write to what `ollama create` accepts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from multiscale_transformer.errors import UserError

INSTRUCTIONS = {"FROM", "PARAMETER", "TEMPLATE", "SYSTEM", "ADAPTER", "LICENSE", "MESSAGE", "REQUIRES"}
# Ollama's documented parameters and their value types.
PARAMETER_TYPES: dict[str, type] = {
    "num_ctx": int,
    "repeat_last_n": int,
    "repeat_penalty": float,
    "temperature": float,
    "seed": int,
    "stop": str,
    "num_predict": int,
    "top_k": int,
    "top_p": float,
    "min_p": float,
}


@dataclass
class Modelfile:
    from_: str = ""
    template: str | None = None
    system: str | None = None
    parameters: dict[str, list[str | int | float]] = field(default_factory=dict)


def _value(rest: str, lines: list[str], i: int) -> tuple[str, int]:
    """An argument: bare text, a "quoted" string, or a \"\"\"multi-line\"\"\" string; returns it and the next line."""
    if rest.startswith('"""'):
        body = rest[3:]
        while '"""' not in body:
            i += 1
            if i >= len(lines):
                raise UserError('Modelfile: unterminated """ string')
            body += "\n" + lines[i]
        text, _, tail = body.partition('"""')
        if tail.strip():
            raise UserError(f'Modelfile: unexpected text after closing """: {tail.strip()!r}')
        return text, i + 1
    if rest.startswith('"'):
        try:
            return json.loads(rest), i + 1
        except json.JSONDecodeError:
            raise UserError(f"Modelfile: bad quoted string {rest!r}") from None
    return rest, i + 1


def _check_template(template: str) -> None:
    """The Go-template checks a typo would fail: balanced {{ }} and every if/range/with closed by an end."""
    if template.count("{{") != template.count("}}"):
        raise UserError("Modelfile: TEMPLATE has unbalanced {{ }}")
    actions = [a.split("}}")[0].strip().lstrip("-").strip() for a in template.split("{{")[1:]]
    opened = sum(a.split(" ")[0] in ("if", "range", "with") for a in actions)
    if opened != sum(a == "end" for a in actions):
        raise UserError("Modelfile: TEMPLATE has an if/range/with without its {{ end }}")


def parse_modelfile(text: str) -> Modelfile:
    """Parse and check a Modelfile; UserError says what is wrong."""
    out = Modelfile()
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if not line or line.startswith("#"):
            i += 1
            continue
        word, _, rest = line.partition(" ")
        instruction = word.upper()
        if instruction not in INSTRUCTIONS:
            raise UserError(f"Modelfile line {i + 1}: unknown instruction {word!r}")
        if instruction == "PARAMETER":
            key, _, raw = rest.strip().partition(" ")
            if key not in PARAMETER_TYPES:
                raise UserError(f"Modelfile line {i + 1}: unknown parameter {key!r}")
            value, i = _value(raw.strip(), lines, i)
            try:
                typed = PARAMETER_TYPES[key](value)
            except ValueError:
                raise UserError(
                    f"Modelfile: parameter {key} needs a {PARAMETER_TYPES[key].__name__}, got {value!r}"
                ) from None
            out.parameters.setdefault(key, []).append(typed)
            continue
        value, i = _value(rest.strip(), lines, i)
        if instruction == "FROM":
            out.from_ = value
        elif instruction == "TEMPLATE":
            _check_template(value)
            out.template = value
        elif instruction == "SYSTEM":
            out.system = value
    if not out.from_:
        raise UserError("Modelfile: no FROM line")
    return out


def check_modelfile(path: Path) -> Modelfile:
    """Parse the Modelfile at `path` and require that a relative FROM names a file next to it."""
    parsed = parse_modelfile(path.read_text(encoding="utf-8"))
    source = Path(parsed.from_)
    if not source.is_absolute():
        source = path.parent / source
    if not source.is_file():
        raise UserError(f"{path}: FROM names {parsed.from_}, which does not exist")
    return parsed
