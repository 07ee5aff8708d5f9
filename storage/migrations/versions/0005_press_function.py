"""PostgreSQL: a button press's writes as one server-side function, ``waymark_press``.

A press on PostgreSQL sent six statements in one pipeline (BEGIN, the chat lock, the
update's claim, the session's new state, its answer, COMMIT). The server's work was small;
the client's was not: each statement costs the bot's process its own trip through
SQLAlchemy's values, psycopg's cursor and the pipeline, and the press is CPU-bound
(docs/benchmarks.md, "One statement per press"). This function does the same writes, in
the same order, as one statement. Called alone, outside an explicit transaction, it is its
own transaction: all of its writes are kept or none (the chat's lock, session-level, stays
taken either way, until the bot releases it).

The statements are those of ``storage/repository.py`` (``_CLAIM``, ``_SESSION_WRITE``,
``_PROFILE_TAG``, ``_answer_upsert``, ``_ANSWER_DROP``), which SQLite still runs one by
one. A change to them, or to the tables they touch, needs a migration that replaces this
function too; the storage tests run both databases through the same cases.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Parameters are prefixed (p_) so that none is taken for a column of the same name.
# SQLSTATE WM001: the session is not at the version the step was decided on, has expired,
# or the profile the step was decided with is no longer the live one (Store: Changed).
FUNCTION = """
CREATE FUNCTION waymark_press(
    p_lock_key bigint,
    p_claim text,
    p_claim_expires timestamptz,
    p_session text,
    p_expected integer,
    p_now timestamptz,
    p_state_ct bytea,
    p_status text,
    p_version integer,
    p_owner text,
    p_profile_seen text,
    p_slots text[],
    p_values bytea[],
    p_answers_expire timestamptz
) RETURNS void
LANGUAGE plpgsql
AS $body$
BEGIN
    -- The chat's lock first (a lazy lease's), before any row is touched: a session-level
    -- advisory lock, held until the bot releases it after its reply.
    IF p_lock_key IS NOT NULL THEN
        PERFORM pg_advisory_lock(p_lock_key);
    END IF;
    -- A duplicate update fails here (unique key), before anything else is written.
    IF p_claim IS NOT NULL THEN
        INSERT INTO processed_updates (key, expires_at) VALUES (p_claim, p_claim_expires);
    END IF;
    UPDATE sessions
       SET state_ct = p_state_ct, status = p_status, version = p_version, updated_at = p_now
     WHERE id = p_session
       AND version = p_expected
       AND expires_at > p_now
       AND (
            p_profile_seen IS NULL
            OR p_profile_seen = coalesce(
                (SELECT profiles.key_id || ':' || CAST(profiles.version AS varchar)
                   FROM profiles JOIN data_keys ON data_keys.id = profiles.key_id
                  WHERE profiles.owner = p_owner
                    AND profiles.expires_at > p_now
                    AND data_keys.expires_at > p_now),
                '')
       );
    IF NOT FOUND THEN
        RAISE EXCEPTION 'session % changed or expired', p_session USING ERRCODE = 'WM001';
    END IF;
    -- The answers in the order given: a NULL value drops the slot's answer.
    FOR i IN 1 .. coalesce(array_length(p_slots, 1), 0) LOOP
        IF p_values[i] IS NULL THEN
            DELETE FROM answers WHERE session_id = p_session AND slot = p_slots[i];
        ELSE
            INSERT INTO answers (session_id, slot, value_ct, expires_at)
            VALUES (p_session, p_slots[i], p_values[i], p_answers_expire)
            ON CONFLICT (session_id, slot)
            DO UPDATE SET value_ct = excluded.value_ct, expires_at = excluded.expires_at;
        END IF;
    END LOOP;
END
$body$
"""

SIGNATURE = (
    "waymark_press(bigint, text, timestamptz, text, integer, timestamptz, bytea, text, "
    "integer, text, text, text[], bytea[], timestamptz)"
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION {SIGNATURE}")
