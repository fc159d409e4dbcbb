"""Locking: one cross-platform pylock.toml per layer, resolved by uv against the layers below."""
