"""The console's screens: the four live panes, the task detail, and the modal dialogs."""
