"""faceid serve: the service that keeps running (cameras, events, REST API)."""
