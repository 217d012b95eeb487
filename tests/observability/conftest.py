from observed_shop import observed

__all__ = ["observed"]
