"""Serve a Hugging Face causal language model as a Cog model that answers a `pregunta`."""
