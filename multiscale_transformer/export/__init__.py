"""Export of the fine-scale path to GGUF (llama.cpp, Ollama, LM Studio); llama.cpp names live only here."""
