"""An OpenAI-compatible chat completions server on the same engine, prompts and moderation (scripts/openai_server)."""
