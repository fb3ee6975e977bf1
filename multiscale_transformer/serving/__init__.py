"""The OpenAI-compatible server behind `axl serve` (needs the [serve] extra: fastapi, uvicorn, pydantic)."""
