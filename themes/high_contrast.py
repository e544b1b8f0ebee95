"""A high-contrast theme: pure black and white with the brightest distinguishable status colours."""

from __future__ import annotations

from textual.theme import Theme

HIGH_CONTRAST = Theme(
    name="aidd-high-contrast",
    dark=True,
    primary="#00FFFF",
    secondary="#FFFF00",
    accent="#FF00FF",
    warning="#FFFF00",
    error="#FF4040",
    success="#00FF00",
    foreground="#FFFFFF",
    background="#000000",
    surface="#000000",
    panel="#202020",
    luminosity_spread=0.25,
    text_alpha=1.0,
    variables={
        "status-pending": "#FFFF00",
        "status-running": "#00FFFF",
        "status-succeeded": "#00FF00",
        "status-failed": "#FF4040",
        "status-cancelled": "#C0C0C0",
        "status-timeout": "#FF8000",
        "worker-online": "#00FF00",
        "worker-draining": "#FFFF00",
        "worker-offline": "#C0C0C0",
        "meter-low": "#00FF00",
        "meter-mid": "#FFFF00",
        "meter-high": "#FF4040",
        "meter-track": "#606060",
        "spark": "#00FFFF",
        "selected": "#FF00FF",
        "muted": "#C0C0C0",
        "banner-demo": "#404000",
        "banner-problem": "#800000",
    },
)
