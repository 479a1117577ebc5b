"""The generic training loop (`fit`) and its memory savers, below models so models can train."""
