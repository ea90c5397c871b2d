"""Merge adapters into their base, export GGUF and Ollama bundles that llama.cpp loads."""
