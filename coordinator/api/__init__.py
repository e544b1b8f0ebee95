"""The HTTP API (Starlette): routes, auth, request limits and the OpenAPI description."""
