"""Import directions: flows is pure, storage stands alone, and plaintext meets ciphertext once."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

RULES = {
    # flows/ is the pure core: no Telegram, no database, no front end, no clock-reading I/O libs.
    "flows": {"bot", "storage", "telegram", "sqlalchemy", "httpx", "aiohttp", "socket", "sqlite3"},
    # storage/ never learns what a flow or a Telegram update is.
    "storage": {"bot", "flows", "telegram", "aiohttp"},
}


def imports(package: str) -> list[tuple[str, int, str]]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found.extend((str(path.relative_to(ROOT)), node.lineno, n) for n in names)
    return found


@pytest.mark.parametrize("package", sorted(RULES))
def test_import_directions(package: str) -> None:
    """flows imports neither bot nor storage; storage imports neither flows nor bot."""
    banned = RULES[package]
    bad = [
        f"{f}:{line} imports {name}"
        for f, line, name in imports(package)
        if name.split(".")[0] in banned
    ]
    assert bad == []


def test_the_rule_would_catch_a_violation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check is not vacuous: a planted bad import is reported."""
    fake = tmp_path / "flows"
    fake.mkdir()
    (fake / "x.py").write_text("import storage.crypto\nfrom bot import cli\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path, raising=False)
    globals()["ROOT"], old = tmp_path, ROOT
    try:
        names = [n for _, _, n in imports("flows")]
    finally:
        globals()["ROOT"] = old
    assert names == ["storage.crypto", "bot"]


def test_only_crypto_touches_aead() -> None:
    """AES-GCM is used in storage/crypto.py and nowhere else."""
    users = {
        str(p.relative_to(ROOT))
        for pkg in ("bot", "flows", "storage")
        for p in (ROOT / pkg).rglob("*.py")
        if "AESGCM" in p.read_text(encoding="utf-8")
        or "cryptography" in p.read_text(encoding="utf-8")
    }
    assert users == {"storage/crypto.py"}


def test_settings_are_read_in_bot_only() -> None:
    """The settings model (and the environment) are read only by the composition root."""
    offenders = [
        f"{f}:{line}"
        for pkg in ("flows", "storage")
        for f, line, name in imports(pkg)
        if name.startswith(("pydantic_settings", "os.environ"))
    ]
    offenders += [
        str(p.relative_to(ROOT))
        for pkg in ("flows", "storage")
        for p in (ROOT / pkg).rglob("*.py")
        if "os.environ" in p.read_text(encoding="utf-8")
        or "getenv" in p.read_text(encoding="utf-8")
    ]
    assert offenders == []
