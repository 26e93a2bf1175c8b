"""What the tests share, in one place: engine.py, moderation.py, server.py (a real Cog server), and fakes of the
Hugging Face hub, Replicate and an OpenAI-compatible judge, served by localserver.py."""

from llmserve.config import PROJECT_ROOT as ROOT

__all__ = ["ROOT"]
