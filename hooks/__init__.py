"""lakeFS webhook receiver: validates action webhooks and publishes commit events."""

__all__: list[str] = []
