"""The localhost OpenAPI: FastAPI routers over the agent's public methods."""
