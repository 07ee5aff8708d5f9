"""Hard limits, in one place: the loader checks flows against them and the engine relies on them.

Telegram's own limits come from the Bot API (4096 characters per message, 1-64 bytes of
callback data). Waymark's callback data is fixed-size (see ``bot/callback_data.py``): it
carries a step sequence number and an option index, never ids, so its size does not depend
on the flow. Ids and codes are still kept short because they appear in logs and catalogs.
"""

from __future__ import annotations

#: Telegram's maximum message length, in characters after entity parsing.
MAX_MESSAGE_CHARS = 4096
#: Room the adapter reserves around a step's own text (progress, section title, hints).
MESSAGE_OVERHEAD_CHARS = 600
#: Longest step text an author may write, so that any rendering still fits one message.
MAX_STEP_TEXT_CHARS = MAX_MESSAGE_CHARS - MESSAGE_OVERHEAD_CHARS
#: Button labels longer than this are shown numbered in the message body instead.
MAX_BUTTON_LABEL_CHARS = 200
#: Options per step: more do not fit on a phone screen as buttons.
MAX_OPTIONS = 12
#: Ids of steps, outcomes, categories and option codes, in UTF-8 bytes.
MAX_ID_BYTES = 40
#: Steps per flow; a guard against runaway files.
MAX_STEPS = 400
#: Steps the engine may pass through in one resume without waiting (skipped `when:` steps,
#: jumps). More is a loop the loader failed to see, and the session fails cleanly.
MAX_STEPS_PER_RESUME = 500
#: Free text: the default and the largest cap a flow may set.
DEFAULT_TEXT_CHARS = 300
MAX_TEXT_CHARS = 1000
#: Largest retention any flow may declare; deployments cap it further (WAYMARK_MAX_RETENTION).
MAX_RETENTION_SECONDS = 366 * 24 * 3600
