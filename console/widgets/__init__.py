"""The console's widgets: each is a noun (a table, a bar, a banner) and posts its own nested messages."""
