"""The table of shipped flows for the README: who each is for, sources, version, what it keeps."""

from __future__ import annotations

from flows.loader import LoadedFlow
from flows.model import Store


def markdown_table(flows: dict[str, LoadedFlow]) -> str:
    """Render every flow as one Markdown table row."""
    rows = [
        "| flow | kind | for | version | questions | keeps | for how long | sources |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for flow_id in sorted(flows):
        loaded = flows[flow_id]
        flow = loaded.flow
        kept = {s.store for s in flow.steps()}
        if Store.ENCRYPTED in kept:
            keeps = "answer codes and typed values (encrypted)"
        elif Store.CODE in kept:
            keeps = "answer codes only (encrypted)"
        else:
            keeps = "nothing beyond progress"
        retention = flow.retention or "24h (progress only)"
        sources = "; ".join(flow.sources) or "—"
        rows.append(
            f"| `{flow_id}` {flow.title} | {flow.kind.value} | {flow.audience or '—'} | "
            f"{flow.version} | {len(loaded.order)} | {keeps} | {retention} | {sources} |"
        )
    return "\n".join(rows)
