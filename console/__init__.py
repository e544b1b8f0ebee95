"""The Textual operations console (`aidd`): live panes over the coordinator's HTTP API."""
