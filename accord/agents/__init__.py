"""The async shells around the pure protocol core: agents, requesters, strategies, routers, LLM backends."""

__all__: list[str] = []
