"""The client side of aidd: the HTTP client SDK with its typed views, and the `aidd` command line."""

DEFAULT_URL = "http://127.0.0.1:8333"
"""Where clients look for the coordinator when told nothing else (`--url`, `AIDD_URL`): the embedded default's
port on loopback. Here, not in `client`, so that the CLI's parser reads it without importing the client."""
