"""The HTTP edge: FastAPI app, dependencies, one router per resource."""
