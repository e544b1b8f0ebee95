"""The README and aidd.yml stay true to the code they document."""

from __future__ import annotations

import re
from pathlib import Path

from coordinator.config import Settings
from coordinator.keys import KEY_TABLE, Keys, key_shapes, key_table

ROOT = Path(__file__).resolve().parent.parent


def test_readme_key_table_matches_keys_module() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- keys:start -->")[1].split("<!-- keys:end -->")[0]
    rows = re.findall(r"^\| `([^`]+)` \| ([^|]+) \| ([^|]+) \|$", table, flags=re.M)
    documented = [(key, kind.strip(), meaning.strip()) for key, kind, meaning in rows]
    assert documented == key_table()


def test_key_table_names_every_builder_once() -> None:
    """Every builder of `Keys` has its one row, in the builder's order, spelled by calling the builder: one added,
    renamed or removed fails here until the table (and so the README) follows."""
    assert list(KEY_TABLE) == [shape.name for shape in key_shapes()]
    assert key_table()[0] == (Keys("aidd").task("{task_id}"), "hash", "hot copy of a task")
    assert ("aidd:queue:service:{service}:{group}[:{needs}]", "sorted set") == key_table()[2][:2]


def test_aidd_yml_documents_every_setting() -> None:
    text = (ROOT / "aidd.yml").read_text()
    documented = set(re.findall(r"^# ([a-z_]+):", text, flags=re.M))
    assert documented == set(Settings.model_fields)
