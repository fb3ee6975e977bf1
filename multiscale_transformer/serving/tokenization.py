"""/tokenize, /detokenize and /tokenizer_info at the server root, in vLLM's shapes.

These are what lm-evaluation-harness's `tokenizer_backend=remote` reads: it finds the EOS id by
tokenizing the `eos_token` text from /tokenizer_info, so special-token text in a prompt becomes its
id (as a Hugging Face tokenizer does). llama.cpp's names (`content`, `add_special`) are accepted too.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import Field, model_validator

from multiscale_transformer.generation.fim import MARKERS
from multiscale_transformer.model.vocab import BOS_ID, EOS_ID, FIM_IDS, VOCAB_SIZE, ByteTokenizer
from multiscale_transformer.serving.common import engine_of, read_body
from multiscale_transformer.serving.protocol import RequestModel, TokenId, openapi_body
from multiscale_transformer.serving.tokens import SPECIAL
from multiscale_transformer.text import text_bytes

router = APIRouter()
SPECIAL_IDS = {text: token for token, text in SPECIAL.items()}
_SPECIAL_TEXT = re.compile("(" + "|".join(map(re.escape, SPECIAL_IDS)) + ")")
MAX_TOKENS = 1 << 20
TOKENIZER = ByteTokenizer()
FIM_NAMES = dict(zip(FIM_IDS, MARKERS[0][:3], strict=True))  # <fim_prefix>, <fim_suffix>, <fim_middle>


class TokenizeRequest(RequestModel):
    model: str | None = None
    prompt: str | None = None
    content: str | None = None  # llama.cpp's name for the text
    # True (vLLM's default): start with EOS, the file start every prompt is read after (generate.py).
    add_special_tokens: bool | None = None
    add_special: bool | None = None  # llama.cpp's name

    @model_validator(mode="after")
    def _one_text(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.content is None):
            raise ValueError("give the text as exactly one of `prompt` or `content`")
        return self


class DetokenizeRequest(RequestModel):
    model: str | None = None
    tokens: Annotated[list[TokenId], Field(max_length=MAX_TOKENS)]


def tokenize(text: str, add_special: bool) -> list[int]:
    """Bytes of the text's UTF-8, with special-token text (e.g. "<|endoftext|>") as its id."""
    ids = [EOS_ID] if add_special else []
    for part in _SPECIAL_TEXT.split(text):
        if part in SPECIAL_IDS:
            ids.append(SPECIAL_IDS[part])
        else:
            ids += text_bytes(part)
    return ids


def detokenize(ids: list[int]) -> str:
    """The text of the ids, special ids as their text, so tokenize(detokenize(ids)) gives them back."""
    parts: list[str] = []
    run: list[int] = []
    for token in ids:
        if token in SPECIAL:
            parts += [TOKENIZER.decode(run), SPECIAL[token]]
            run = []
        else:
            run.append(token)
    return "".join([*parts, TOKENIZER.decode(run)])


def prompt_text(ids: list[int]) -> str:
    """A prompt as text, as llama.cpp reports the prompt it read: special ids and the FIM sentinels as
    their names (StarCoder's, which our FIM marker parsing reads), every other run of bytes decoded."""
    return detokenize([t for token in ids for t in _named(token)])


def _named(token: int) -> list[int]:
    return list(FIM_NAMES[token].encode()) if token in FIM_NAMES else [token]


@router.post("/tokenize", response_model=None, openapi_extra=openapi_body(TokenizeRequest))
async def tokenize_endpoint(request: Request) -> JSONResponse:
    req = await read_body(request, TokenizeRequest)
    engine_of(request)  # 503 while loading, like every endpoint that reports the context
    flag = req.add_special_tokens if req.add_special_tokens is not None else req.add_special
    ids = tokenize(req.prompt if req.prompt is not None else req.content or "", True if flag is None else flag)
    return JSONResponse({"count": len(ids), "max_model_len": request.app.state.context_length, "tokens": ids})


@router.post("/detokenize", response_model=None, openapi_extra=openapi_body(DetokenizeRequest))
async def detokenize_endpoint(request: Request) -> JSONResponse:
    req = await read_body(request, DetokenizeRequest)
    text = detokenize(req.tokens)
    return JSONResponse({"prompt": text, "content": text})  # vLLM's name, llama.cpp's name


@router.get("/tokenizer_info")
async def tokenizer_info(request: Request) -> JSONResponse:
    engine = engine_of(request)
    info: dict[str, object] = {
        "tokenizer_class": "ByteTokenizer",
        "vocab_size": VOCAB_SIZE,
        "model_max_length": request.app.state.context_length,
        "bos_token": SPECIAL[BOS_ID],
        "eos_token": SPECIAL[EOS_ID],
        "pad_token": None,
        "unk_token": None,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "added_tokens_decoder": {str(i): {"content": t, "special": True} for i, t in SPECIAL.items()},
        "add_bos_token": False,
        "tokens": "byte values 0..255 are the UTF-8 bytes of the text",
    }
    if engine.model.config.fim:
        info["fim_token_ids"] = dict(zip(("prefix", "suffix", "middle"), FIM_IDS, strict=True))
    return JSONResponse(info)
