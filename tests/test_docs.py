"""The README and aidd.yml stay true to the code they document."""

from __future__ import annotations

import re
from pathlib import Path

from coordinator.config import Settings
from coordinator.keys import KEY_TABLE

ROOT = Path(__file__).resolve().parent.parent


def test_readme_key_table_matches_keys_module() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- keys:start -->")[1].split("<!-- keys:end -->")[0]
    rows = re.findall(r"^\| `([^`]+)` \| ([^|]+) \| ([^|]+) \|$", table, flags=re.M)
    documented = [(key, kind.strip(), meaning.strip()) for key, kind, meaning in rows]
    assert documented == [(k.format(p="aidd", id="{id}", service="{service}", group="{group}", needs="{needs}"), t, m)
                          for k, t, m in KEY_TABLE]


def test_aidd_yml_documents_every_setting() -> None:
    text = (ROOT / "aidd.yml").read_text()
    documented = set(re.findall(r"^# ([a-z_]+):", text, flags=re.M))
    assert documented == set(Settings.model_fields)
