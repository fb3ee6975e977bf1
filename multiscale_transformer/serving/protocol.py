"""Pydantic mirrors of the OpenAI completions and chat requests, with bounded fields.

Every sampling field is optional and `None` means "the server's default" (the published AXL
generation config), because real clients send explicit nulls. Unknown fields are ignored so that
clients written for other servers keep working; strict typing rejects "5" where a number belongs.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from multiscale_transformer.model.vocab import VOCAB_SIZE
from multiscale_transformer.text import text_bytes

# Bytes are the tokens: a prompt given as token ids is a list of byte values, where BOS (256) and
# EOS (257) may stand as context: lm-evaluation-harness starts every scored text with EOS, as
# `axl eval` reads files. They are never text, so an echoed prompt's text leaves them out.
TokenId = Annotated[int, Field(ge=0, le=VOCAB_SIZE - 1)]
MAX_STOPS = 16
MAX_STOP_BYTES = 256

# The sampling ranges, declared once: the request models of every wire shape (OpenAI's, Mistral's,
# llama.cpp's) type their fields with these, and the server checks the values nowhere else.
MaxTokens = Annotated[int, Field(ge=0)]
Temperature = Annotated[float, Field(ge=0, le=2)]
TopP = Annotated[float, Field(gt=0, le=1)]
TopK = Annotated[int, Field(ge=0)]
RepetitionPenalty = Annotated[float, Field(gt=0, le=10)]
Penalty = Annotated[float, Field(ge=-2, le=2)]  # frequency_penalty and presence_penalty
LogitBias = Annotated[dict[str, Annotated[float, Field(ge=-100, le=100)]], Field(max_length=300)]
StopList = Annotated[list[str], Field(max_length=MAX_STOPS)]


class RequestModel(BaseModel):
    """(Part of) a request body: unknown fields ignored, strict types, and a bounded `stop` where it has one."""

    model_config = ConfigDict(extra="ignore", strict=True)

    @field_validator("stop", check_fields=False)
    @classmethod
    def _stop_size(cls, value: str | list[str] | None) -> str | list[str] | None:
        for s in [value] if isinstance(value, str) else value or []:
            if len(text_bytes(s)) > MAX_STOP_BYTES:
                raise ValueError(f"a stop sequence may have at most {MAX_STOP_BYTES} bytes")
        return value


class StreamOptions(RequestModel):
    include_usage: bool | None = None


class CommonSampling(RequestModel):
    """The sampling fields that OpenAI's and llama.cpp's requests name alike (top_k is an extension
    of OpenAI's API, as in vLLM); None: the served model's default."""

    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    seed: int | None = None
    stream: bool | None = None


class SamplingFields(CommonSampling):
    """Fields shared by /v1/completions, /v1/chat/completions and /v1/fim/completions."""

    model: str | None = None
    max_tokens: MaxTokens | None = None
    repetition_penalty: RepetitionPenalty | None = None  # llama.cpp's and vLLM's extension
    logit_bias: LogitBias | None = None
    stop: str | StopList | None = None
    n: Annotated[int, Field(ge=1, le=16)] | None = None
    stream_options: StreamOptions | None = None
    user: str | None = None

    @field_validator("logit_bias")
    @classmethod
    def _bias_ids(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key in value or {}:
            # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
            if not (key.isascii() and key.isdigit()) or int(key) >= VOCAB_SIZE:
                raise ValueError(f"logit_bias keys must be token ids 0..{VOCAB_SIZE - 1}, got {key!r}")
        return value

    def stops(self) -> list[bytes]:
        """Non-empty stop sequences as bytes."""
        items = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return [text_bytes(s) for s in items if s]


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[TokenId] | list[list[TokenId]]
    echo: bool | None = None
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    suffix: str | None = None
    best_of: Annotated[int, Field(ge=1)] | None = None


class TextPart(RequestModel):
    type: Literal["text"]
    text: str


class ChatMessage(RequestModel):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    # Newer clients (and LangChain) send max_completion_tokens instead of max_tokens.
    max_completion_tokens: MaxTokens | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None


# Responses. Fields the OpenAI API sends as null are kept (model_dump without exclude_none).


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


FinishReason = Literal["stop", "length"]
Choice = TypeVar("Choice", bound=BaseModel)


class Reply(BaseModel, Generic[Choice]):
    """What a completion reply and each chunk of its stream have: the request's id, time and model."""

    id: str
    object: str
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None] | None
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReason | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class Completion(Reply[CompletionChoice]):
    object: Literal["text_completion"] = "text_completion"


class ChatCompletion(Reply[ChatChoice]):
    object: Literal["chat.completion"] = "chat.completion"
    usage: Usage


class ChatCompletionChunk(Reply[ChatChunkChoice]):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"


class ModelMeta(BaseModel):
    """llama.cpp's `meta` of a model in /v1/models, in its names."""

    n_ctx_train: int  # the context, in bytes
    n_vocab: int
    n_params: int


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "axl"
    context_length: int
    max_model_len: int  # vLLM's name for the same number, read by some clients
    meta: ModelMeta


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its body itself: the body's JSON schema, refs inlined.

    The endpoints read the body with `read_body` (size limit first, then validation), so FastAPI
    cannot infer it; the schema makes /openapi.json describe what they accept (schemathesis fuzzes it).
    """
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}
