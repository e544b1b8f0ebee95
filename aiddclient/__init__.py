"""The client side of aidd: the HTTP client SDK with its typed views, and the `aidd` command line."""
