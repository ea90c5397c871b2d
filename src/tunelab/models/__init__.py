"""tunelab's own model code for the inference engine (llama, mistral, qwen2/3, gemma3)."""
