"""The default dark theme: calm background, saturated status colours."""

from __future__ import annotations

from textual.theme import Theme

DARK = Theme(
    name="aidd-dark",
    dark=True,
    primary="#5FAFFF",
    secondary="#AF87FF",
    accent="#FFAF5F",
    warning="#E5C07B",
    error="#EF596F",
    success="#89CA78",
    foreground="#D7DAE0",
    background="#15181E",
    surface="#1D2129",
    panel="#262B36",
    variables={
        "status-pending": "#E5C07B",
        "status-running": "#5FAFFF",
        "status-succeeded": "#89CA78",
        "status-failed": "#EF596F",
        "status-cancelled": "#8B93A1",
        "status-timeout": "#D19A66",
        "worker-online": "#89CA78",
        "worker-draining": "#E5C07B",
        "worker-offline": "#8B93A1",
        "meter-low": "#89CA78",
        "meter-mid": "#E5C07B",
        "meter-high": "#EF596F",
        "meter-track": "#3A404C",
        "spark": "#56B6C2",
        "selected": "#FFAF5F",
        "muted": "#8B93A1",
        "banner-demo": "#3D3320",
        "banner-problem": "#5A1F2A",
    },
)
