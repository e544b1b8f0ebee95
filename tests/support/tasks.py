"""Task submissions as the tests send them."""

from __future__ import annotations

from typing import Any


def task_body(service: str = "admet", task_type: str = "qikprop", **fields: Any) -> dict[str, Any]:
    """A task submission body (the SPEC's legacy form, the original clients' form, plus any extra fields)."""
    return {"service": service, "task_type": task_type, "name": f"{service} {task_type}",
            "input_params": {"smiles": ["CCO"]}, **fields}
