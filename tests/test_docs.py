"""Generated documentation stays in step with the code."""

from __future__ import annotations

from pathlib import Path

from bot.flow_table import markdown_table
from flows.loader import LoadedFlow

ROOT = Path(__file__).resolve().parent.parent


def test_flow_table_is_current(shipped: dict[str, LoadedFlow]) -> None:
    """docs/flows.md holds exactly what `waymark flows list` prints today."""
    page = (ROOT / "docs" / "flows.md").read_text(encoding="utf-8")
    assert markdown_table(shipped) in page, "run: waymark flows list, and update docs/flows.md"


def test_readme_documents_every_setting() -> None:
    """Every settings field is in the README's table."""
    from bot.settings import Settings

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [name for name in Settings.model_fields if f"`WAYMARK_{name.upper()}`" not in readme]
    assert missing == []
