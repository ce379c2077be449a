"""The control plane: FastAPI app, store, auth, routes. Never imports torch."""
