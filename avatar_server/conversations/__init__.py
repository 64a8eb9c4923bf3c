"""Conversations (one per session that reached RUNNING, kept for the retention) and usage."""

from .service import ConversationService
from .usage import UsageService

__all__ = ["ConversationService", "UsageService"]
