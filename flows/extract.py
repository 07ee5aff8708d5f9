"""A Babel extraction method for flow files.

Registered as the ``waymark_flows`` extractor (``pyproject.toml`` entry point), so
``pybabel extract`` and ``waymark i18n extract`` both pull every text of every flow into
``locales/flows.pot`` with its file and line, keyed by a ``msgctxt`` per step field.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import IO, Any

from flows.loader import load_text
from flows.texts import flow_texts

Extracted = tuple[int, str, tuple[str, str], list[str]]


def extract_flow(
    fileobj: IO[bytes],
    keywords: Mapping[str, Any],
    comment_tags: Collection[str],
    options: Mapping[str, Any],
) -> Iterator[Extracted]:
    """Yield ``(line, "pgettext", (context, text), comments)`` for every text of a flow.

    Args:
        fileobj: The flow file, opened in binary mode.
        keywords: Babel's keyword map (``pgettext`` must map context then message).
        comment_tags: Unused; translator comments come from the flow itself.
        options: Unused.

    Raises:
        FlowDefinitionError: The file is not a valid flow (extraction must not hide it).
    """
    del keywords, comment_tags, options
    name = getattr(fileobj, "name", "<flow>")
    text = fileobj.read().decode("utf-8")
    loaded = load_text(text, str(name))  # a broken flow raises: extraction must not hide it
    for item in flow_texts(loaded):
        comments = [item.comment] if item.comment else []
        yield item.line, "pgettext", (item.context, item.text), comments
