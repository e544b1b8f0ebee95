"""A light theme for bright terminals and daylight offices."""

from __future__ import annotations

from textual.theme import Theme

LIGHT = Theme(
    name="aidd-light",
    dark=False,
    primary="#0969DA",
    secondary="#8250DF",
    accent="#BC4C00",
    warning="#9A6700",
    error="#CF222E",
    success="#1A7F37",
    foreground="#1F2328",
    background="#FAFAFA",
    surface="#F0F1F3",
    panel="#E1E4E8",
    variables={
        "status-pending": "#9A6700",
        "status-running": "#0969DA",
        "status-succeeded": "#1A7F37",
        "status-failed": "#CF222E",
        "status-cancelled": "#6E7781",
        "status-timeout": "#BC4C00",
        "worker-online": "#1A7F37",
        "worker-draining": "#9A6700",
        "worker-offline": "#6E7781",
        "meter-low": "#1A7F37",
        "meter-mid": "#9A6700",
        "meter-high": "#CF222E",
        "meter-track": "#D0D7DE",
        "spark": "#0550AE",
        "selected": "#BC4C00",
        "muted": "#6E7781",
        "banner-demo": "#FFF1C2",
        "banner-problem": "#FFD7D5",
    },
)
