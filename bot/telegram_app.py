"""The Telegram front end: python-telegram-bot v22, private chats only, state in the database.

Every update goes through one handler (``WaymarkBot.handle``), which:

1. refuses anything outside a private chat (says so once, then leaves the group);
2. takes the chat's lock, so updates of one chat run one at a time while other chats run
   concurrently (``concurrent_updates``), and every state change is an optimistic-locked
   database write, so a second worker cannot double an answer either;
3. claims the update id in the same transaction as the change it causes, so a redelivered
   or duplicated update changes nothing twice;
4. turns the update into an engine input through ``Service`` and renders the events.

No answer text, token or raw Telegram id is logged; ids become keyed pseudonyms at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import warnings
import weakref
from collections import defaultdict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from babel import Locale
from telegram import (
    BotCommand,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
)
from telegram.constants import ChatType, ParseMode
from telegram.error import BadRequest, Forbidden, TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    ContextTypes,
    TypeHandler,
)
from telegram.warnings import PTBUserWarning

from bot import presenter
from bot.callback_data import CallbackCodec, seq_code, seq_value
from bot.http import AiohttpRequest
from bot.i18n import Translator, available_languages, negotiate, resolve_language
from bot.i18n import null_gettext as N_  # noqa: N812 - the gettext convention for "mark only"
from bot.i18n_status import review_status
from bot.presenter import BACK, DONE, SKIP, Action, Prompt
from bot.runtime import Runtime
from bot.service import Found, Service, Step, Turn
from bot.teams_desk import TeamDesk
from bot.telegram_teams import TeamUI
from bot.text import chunks, clean_input, directional, esc
from flows.engine import current_ask
from flows.errors import InputRejected, Reason
from flows.events import (
    Ask,
    Back,
    Choice,
    Ended,
    Explain,
    Feedback,
    Input,
    OutcomeReached,
    Skip,
    TextInput,
    Toggle,
)
from flows.loader import LoadedFlow
from flows.model import Kind
from flows.state import State
from storage.errors import Duplicate
from storage.locks import Lease, lease, try_exclusive
from storage.teams import MemberInfo, Teams

log = logging.getLogger("waymark.bot")

#: A keyboard: rows of (label, callback data) buttons.
Rows = list[list[tuple[str, str]]]


def _markup_json(rows: Rows) -> dict[str, Any]:
    """An inline keyboard as the Bot API's JSON (what InlineKeyboardMarkup.to_dict gives)."""
    return {
        "inline_keyboard": [
            [{"text": text, "callback_data": data} for text, data in row] for row in rows
        ]
    }


# What PTB says when do_api_request is given a method it has a typed call for.
_EDIT_WARNING = r"Please use 'Bot\.editMessageText' instead"
T = TypeVar("T")

#: Commands, in menu order, with their (English) descriptions; translated per language
#: (``N_`` marks them for extraction; they are translated where they are shown).
COMMANDS = (
    ("start", N_("Main menu")),
    ("screen", N_("Screen a person for indicators")),
    ("consent", N_("Explain consent to the person")),
    ("checklist", N_("Checklists and risk ratings")),
    ("quiz", N_("Practise with a quiz")),
    ("language", N_("Change the language")),
    ("cancel", N_("Stop the current checklist")),
    ("forget", N_("Erase everything the bot holds about me")),
    ("x", N_("Quick exit: stop and delete this conversation")),
    ("invite", N_("Invite people to your team (supervisors, admins)")),
    ("members", N_("List or revoke your team's members (supervisors)")),
    ("digest", N_("Your team's numbers (supervisors)")),
    ("leave", N_("Leave your team")),
    ("help", N_("How this bot works")),
)
#: Which flow kinds each menu command lists.
MENUS: dict[str, tuple[Kind, ...]] = {
    "screen": (Kind.SCREENING,),
    "consent": (Kind.CONSENT,),
    "checklist": (Kind.CHECKLIST,),
    "quiz": (Kind.QUIZ,),
    "start": (Kind.SCREENING, Kind.CONSENT, Kind.CHECKLIST, Kind.QUIZ),
}
#: Updates handled at once by one worker (see build_application).
MAX_IN_FLIGHT = 24
#: How often due message deletions run.
CLEANUP_SECONDS = 20
#: How often each worker drops the warm sessions unused for long or expired (storage).
SWEEP_SECONDS = 20
#: How often unacknowledged alerts are checked for reminders and escalation.
REMIND_SECONDS = 5
#: How often the periodic digest is checked for (it is sent once per period).
DIGEST_CHECK_SECONDS = 60


@dataclass
class Context:
    """Who and where an update is about, resolved once.

    Attributes:
        owner: The person's pseudonym.
        chat_id: The private chat.
        tr: The person's own language.
        claim: The update's exactly-once key.
        respondent: The language of the person being screened (bilingual mode), if set.
        user_id: The Telegram user id (kept in memory for this update only).
        role: admin, supervisor, responder, trainee, guest or none; None when not looked
            up (an answer to a question needs no role: its flow was allowed when it began).
        member: The person's team membership, if any (not looked up when role is None).
        lease: The chat's cross-worker lock, held while the update is handled.
        profile: The person's profile data as read when the update arrived.
    """

    owner: str
    chat_id: int
    tr: Translator
    claim: str
    respondent: Translator | None = None
    user_id: int = 0
    role: str | None = None
    member: MemberInfo | None = None
    lease: Lease | None = None
    profile: dict[str, Any] = field(default_factory=dict)


class WaymarkBot:
    """The handlers, bound to one runtime.

    Args:
        runtime: The composition root's runtime.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.service: Service = runtime.service
        self.store = runtime.store
        self.codec = CallbackCodec(runtime.store.keys)
        self.languages = available_languages()
        # Only the locks of chats being handled stay alive: memory does not grow with every
        # chat ever seen.
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()
        self._tasks: list[asyncio.Task[None]] = []
        #: Updates being handled right now, and chat locks still being released (tests and
        #: a graceful stop wait for zero).
        self.in_flight = 0
        # Chat locks (PostgreSQL) are released after the reply, off its path, on a thread
        # of their own: an unlock never waits for a lock, so releases always get a thread
        # even when every database thread waits for a chat lock that a release will free.
        self._releaser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="waymark-release")
        self._releasing: set[asyncio.Future[None]] = set()
        #: Button presses' early answers still on their way (see _answer_press).
        self._acking: set[asyncio.Future[None]] = set()
        self.flow_ids = sorted(runtime.flows)
        self.teams = Teams(runtime.store)
        self.desk = TeamDesk(runtime.settings, runtime.service, self.teams)
        # Alerts and counts are written in the same transaction as the answer ending a flow.
        runtime.service.side_writes = self.desk.side_writes
        self.teams_ui = TeamUI(self, self.desk, self.teams)

    # ------------------------------------------------------------------ plumbing

    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking storage call off the event loop."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    def owner_of(self, user_id: int) -> str:
        """The keyed pseudonym of a Telegram user."""
        return self.store.keys.pseudonym("tg", user_id)

    def _who(self, owner: str, user_id: int, language_code: str | None) -> Context:
        """The person's profile, languages and role (read on the database thread)."""
        profile = self.service.profile(owner)
        own, respondent = self._translators(profile, language_code)
        role, member = self.desk.role(user_id, owner)
        return Context(
            owner=owner,
            chat_id=0,
            tr=own,
            claim="",
            respondent=respondent,
            user_id=user_id,
            role=role,
            member=member,
            profile=profile,
        )

    def _translators(
        self, profile: dict[str, Any], language_code: str | None
    ) -> tuple[Translator, Translator | None]:
        """The person's language and the respondent's (bilingual mode), if one is chosen.

        The person's own: their choice, else Telegram's, else the default, else English.
        """
        language = resolve_language(
            profile.get("lang"),
            language_code,
            self.runtime.settings.default_language,
            self.languages,
        )
        respondent = profile.get("resp_lang")
        other = Translator(respondent) if respondent in self.languages else None
        return Translator(language), other

    # ------------------------------------------------------------------ entry

    async def handle(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """The one entry point for every update."""
        del context
        self.in_flight += 1
        try:
            await self._handle(update)
        finally:
            self.in_flight -= 1

    async def _handle(self, update: Update) -> None:
        chat = update.effective_chat
        user = update.effective_user
        if chat is None:
            return
        if chat.type != ChatType.PRIVATE:
            await self._refuse_group(update)
            return
        if user is None or user.is_bot:
            return
        lock = self._locks.get(chat.id)
        if lock is None:
            lock = self._locks[chat.id] = asyncio.Lock()
        owner = self.owner_of(user.id)
        claim = f"u{update.update_id}"
        query = update.callback_query
        press = self.codec.unpack(query.data or "") if query is not None else None
        async with lock:
            try:
                if query is not None and press is not None and press.kind == "a":
                    # An answer to a question, the commonest update: one trip to the
                    # database thread, one transaction (see _answer_press).
                    await self._answer_press(query, press, owner, chat.id, user, claim)
                    return
                ctx = await self.db(self._enter, chat.id, owner, user.id, user.language_code)
                ctx.chat_id, ctx.claim = chat.id, claim
                try:
                    if query is not None:
                        await self._on_press(query, ctx)
                    elif update.message is not None:
                        await self._on_message(update.message, ctx)
                finally:
                    self._release(ctx.lease)
            except Duplicate:
                log.info("duplicate update ignored (owner %s…)", owner[:6])

    def _lease(self, chat_id: int, *, lazy: bool = False) -> Lease:
        """The chat's lock across workers (PostgreSQL advisory lock; inert on SQLite)."""
        return lease(self.store.engine, f"chat:{self.owner_of(chat_id)}", lazy=lazy)

    def _enter(self, chat_id: int, owner: str, user_id: int, language_code: str | None) -> Context:
        """Take the chat's lock and look up the person, in one trip to the database thread."""
        held = self._lease(chat_id)
        try:
            ctx = self._who(owner, user_id, language_code)
        except BaseException:
            held.release()
            raise
        ctx.lease = held
        return ctx

    def _release(self, held: Lease | None) -> None:
        """Release a chat lock without waiting for it (the reply has been sent).

        The next update of the same chat takes the lock anew on another connection, so it
        waits in the database until this release has run: order is kept.
        """
        if held is None or held.connection is None:
            return
        done = asyncio.get_running_loop().run_in_executor(self._releaser, held.release)
        self._track(done, self._releasing)
        done.add_done_callback(self._released)

    def _track(self, work: asyncio.Future[None], pool: set[asyncio.Future[None]]) -> None:
        """Count ``work`` as in flight until it is done, in ``pool`` for a stop to await."""
        self.in_flight += 1
        pool.add(work)
        work.add_done_callback(functools.partial(self._untrack, pool))

    def _untrack(self, pool: set[asyncio.Future[None]], work: asyncio.Future[None]) -> None:
        pool.discard(work)
        self.in_flight -= 1

    @staticmethod
    def _released(done: asyncio.Future[None]) -> None:
        if not done.cancelled() and done.exception() is not None:
            # Lease.release has discarded the connection, which ends its lock as well.
            log.warning("releasing a chat lock failed: %s", type(done.exception()).__name__)

    async def _refuse_group(self, update: Update) -> None:
        chat = update.effective_chat
        assert chat is not None
        if update.message is not None or update.my_chat_member is not None:
            language = negotiate(
                update.effective_user.language_code if update.effective_user else None,
                self.languages,
            )
            tr = Translator(language or self.runtime.settings.default_language)
            with contextlib.suppress(TelegramError):
                await update.get_bot().send_message(
                    chat.id,
                    protect_content=True,
                    text=tr.gettext(
                        "Waymark works only in a private chat. Please open a private chat "
                        "with the bot. Leaving this group."
                    ),
                )
            with contextlib.suppress(TelegramError):
                await update.get_bot().leave_chat(chat.id)
        log.info("refused a %s chat", chat.type)

    # ------------------------------------------------------------------ messages

    async def _on_message(self, message: Message, ctx: Context) -> None:
        await self._remember(ctx, message.message_id)
        text = message.text
        if text is None:
            # Photos, voice, stickers, documents, locations…: never downloaded, never kept.
            await self._send(
                ctx,
                ctx.tr.gettext(
                    "I can only read text and button presses. Nothing from that message was saved."
                ),
            )
            await self._reshow(ctx)
            return
        if text.startswith("/"):
            head, _, arg = text.partition(" ")
            command = head[1:].split("@")[0].lower()
            await self._command(command, ctx, arg)
            return
        await self._typed(clean_input(text), ctx)

    async def _command(self, command: str, ctx: Context, arg: str = "") -> None:
        if not await self.db(self.store.claim, ctx.claim, now=self.service.clock()):
            raise Duplicate(ctx.claim)
        if await self.teams_ui.command(command, arg, ctx):
            return
        if command in MENUS:
            await self._menu(command, ctx)
        elif command == "help":
            await self._send(ctx, self._help(ctx.tr))
        elif command == "language":
            await self._language_menu(ctx)
        elif command == "cancel":
            await self._cancel(ctx)
        elif command == "forget":
            _ = ctx.tr.gettext
            await self._send(
                ctx,
                _(
                    "Erase everything Waymark holds about you: your open checklist, kept "
                    "answers and settings? This cannot be undone."
                ),
                self._keyboard(
                    [
                        [(_("Yes, erase everything"), self.codec.pack(ctx.owner, "", "f", "y"))],
                        [(_("No, keep it"), self.codec.pack(ctx.owner, "", "f", "n"))],
                    ]
                ),
            )
        elif command == "x":
            await self._quick_exit(ctx)
        else:
            await self._send(
                ctx, ctx.tr.gettext("Unknown command. Send /help to see what I can do.")
            )

    async def _typed(self, text: str, ctx: Context) -> None:
        if await self.teams_ui.typed(text, ctx):
            return

        def choose(_profile: dict[str, Any], found: Found | None) -> Input | None:
            # Only a question that takes typed text, and only non-empty text, gets it.
            if found is None or not text:
                return None
            _, state, flow = found
            if presenter.answers(flow, current_ask(flow, state))[1] is None:
                return None
            return TextInput(text)

        try:
            step = await self.db(
                self.service.step, ctx.owner, choose, claim=ctx.claim, lease=ctx.lease
            )
        except InputRejected as exc:
            await self._send(ctx, presenter.rejection(ctx.tr, exc.reason, exc.detail))
            if exc.reason is not Reason.NOT_ACTIVE:
                await self._reshow(ctx)
            return
        if step.turn is not None:
            await self._render(ctx, step.turn, None)
        elif step.found is None:
            await self._send(ctx, ctx.tr.gettext("Send /start to choose a checklist."))
        else:
            _, state, flow = step.found
            if presenter.answers(flow, current_ask(flow, state))[1] is not None:
                # The question takes text, so what was declined is empty text.
                await self._send(ctx, presenter.rejection(ctx.tr, Reason.EMPTY, {}))
            else:
                await self._send(ctx, ctx.tr.gettext("Please answer with the buttons."))
                await self._reshow(ctx, step.found)

    # ------------------------------------------------------------------ presses

    async def _on_press(self, query: CallbackQuery, ctx: Context) -> None:
        press = self.codec.unpack(query.data or "")
        message = query.message if isinstance(query.message, Message) else None
        if press is None:
            await query.answer(ctx.tr.gettext("This button is not valid."))
            return
        if not self.codec.valid(press, ctx.owner, ""):
            await query.answer(ctx.tr.gettext("This button is not valid."))
            return
        if not await self.db(self.store.claim, ctx.claim, now=self.service.clock()):
            raise Duplicate(ctx.claim)
        await query.answer()
        if await self.teams_ui.press(press, ctx, query, message):
            return
        if press.kind == "m" and press.fields and press.fields[0].isdigit():
            index = int(press.fields[0])
            if 0 <= index < len(self.flow_ids):
                await self._start_flow(self.flow_ids[index], ctx)
        elif press.kind == "r" and press.fields:
            code = press.fields[0]
            chosen = code if code in self.languages else None
            await self.db(self.service.update_profile, ctx.owner, resp_lang=chosen)
            if chosen is None:
                await self._send(
                    ctx, ctx.tr.gettext("Screening questions will be shown in your language only.")
                )
            else:
                name = Locale.parse(chosen).get_display_name(chosen) or chosen
                await self._send(
                    ctx,
                    ctx.tr.gettext(
                        "Screening questions will be shown in {language} first, then in your "
                        "language. The consent explanation is given whole in {language}."
                    ).format(language=name),
                )
        elif press.kind == "l" and press.fields and press.fields[0] in self.languages:
            await self.db(self.service.update_profile, ctx.owner, lang=press.fields[0])
            ctx.tr = Translator(press.fields[0])
            await self._send(ctx, ctx.tr.gettext("Language changed."))
            await self._reshow(ctx)
        elif press.kind == "f":
            if press.fields == ("y",):
                await self._forget(ctx, message)
            elif message is not None:
                with contextlib.suppress(TelegramError):
                    await message.edit_text(esc(ctx.tr.gettext("Nothing was erased.")))
        elif press.kind == "k":
            await self.db(self.store.schedule_deletion, ctx.owner, None)
            if message is not None:
                with contextlib.suppress(TelegramError):
                    await message.edit_reply_markup(None)
            await self._send(ctx, ctx.tr.gettext("These messages will be kept."))

    async def _answer_press(
        self, query: CallbackQuery, press: Any, owner: str, chat_id: int, user: Any, claim: str
    ) -> None:
        """A press of an answer button: read, check, apply and write in one transaction.

        The checks (is the button this session's, is its question the current one, is the
        choice on offer) are pure and run inside the transaction on what it read, so a
        press costs one database round of work and one thread hop.

        The button's spinner is stopped while the transaction still writes, as soon as
        its writes are on their way to the server (``Service.step``'s ``sent``):
        ``answerCallbackQuery`` then travels, and its own work is done, while the database
        works, instead of after it or in the way of the sending. It carries what the checks
        decided: nothing for a press that applies. A press that changes nothing ("This
        question is closed.") writes nothing, and is answered when the step returns. The
        next question is sent once the transaction has committed. A press whose write then
        fails has its spinner stopped and nothing else shown (nothing was stored; pressing
        again works).

        Usually the checks run on this worker's copy of the session as its last press left
        it (``Store.step``'s warm copy), and the lock and the writes then go in one round
        trip. Only a press the copy finds applying is answered from it; a refusal is
        decided again on a fresh read before anything is said. If another worker has
        answered the question meanwhile, the write fails, the fresh read finds the press
        stale, and since the spinner has been answered already, the chat is told so and
        shown the current question.
        """
        message = query.message if isinstance(query.message, Message) else None
        seen: dict[str, Any] = {}
        loop = asyncio.get_running_loop()
        acks: list[asyncio.Task[None]] = []

        def start_ack(toast: str | None) -> None:
            # On the event loop. Kept in a set of the bot's, counted as work in flight, and
            # awaited at a stop, whichever way this handler ends.
            task = loop.create_task(self._ack(query, toast))
            acks.append(task)
            self._track(task, self._acking)

        def ack_once() -> None:
            # On the event loop, once the checks have decided (``seen["toast"]``), and only
            # once: a retry after a conflict decides again, but a button press can be
            # answered only once.
            if "toast" in seen and not seen.get("acking"):
                seen["acking"] = True
                start_ack(seen["toast"])

        def sent() -> None:
            # On the database thread, once the writes are on the wire: the answer's own
            # work then overlaps the wait for the server, not the sending. ack_once runs
            # before the database thread's result arrives on the loop (both come through
            # call_soon_threadsafe, in order), so ``acks`` holds the task by the time
            # ``self.db(work)`` returns or raises.
            loop.call_soon_threadsafe(ack_once)

        def choose(profile: dict[str, Any], found: Found | None) -> Input | None:
            # On the database thread, between the reads and the writes.
            verdict, given = self._verdict(press, owner, found)
            if given is None and found is not None and found[0].cached:
                # A refusal decided on this worker's copy of the session may only mean
                # that another worker has moved it on: say nothing, keep nothing. Declining
                # makes the step read the session afresh and ask again (Store.step).
                return None
            own, respondent = self._translators(profile, user.language_code)
            seen["ctx"] = Context(owner, chat_id, own, claim, respondent, user.id, profile=profile)
            seen["verdict"] = verdict
            if "answered" not in seen:
                # What the spinner's answer says: the first decision's (see the end of this
                # method). It is sent by ack_once.
                seen["answered"] = seen["verdict"]
                seen["toast"] = self._toast(own, seen["verdict"])
            return given

        def work() -> tuple[Lease, Step]:
            # Lazy: the lock is the first statement of the press's one transaction.
            held = self._lease(chat_id, lazy=True)
            try:
                return held, self.service.step(owner, choose, claim=claim, lease=held, sent=sent)
            except BaseException:
                held.release()
                raise

        try:
            try:
                held, step = await self.db(work)
            finally:
                # A press decided but not written (a refusal, or a write that failed before
                # it was sent) is answered now.
                ack_once()
        except InputRejected as exc:
            if "ctx" not in seen:
                # The checks never ran: the session's flow could not be loaded (its version
                # is gone), so there is no question to show either. Nothing was stored.
                own, _ = self._translators({}, user.language_code)
                await self._ack(query, self._toast(own, "closed"))
                return
            # The flow refused the input (nothing was stored): say why, show the question.
            ctx = seen["ctx"]
            await acks[0]  # the early answer (see start_ack)
            await self._send(ctx, presenter.rejection(ctx.tr, exc.reason, exc.detail))
            if exc.reason is not Reason.NOT_ACTIVE:
                await self._reshow(ctx)
            return
        ctx = seen["ctx"]
        ctx.lease = held
        try:
            verdict = seen["verdict"]
            if step.turn is None and verdict == "stale" and seen["answered"] != "stale":
                # A conflict's retry decided otherwise than the answer already sent: another
                # worker answered this question meanwhile (the press was answered as applying,
                # on this worker's copy of the session). The words go to the chat, with the
                # current question after them. A session found closed, gone or replaced by
                # another ("invalid") adds nothing: it may have been erased (quick exit,
                # /forget) and the chat wiped with it; a press on it again says why.
                toast = self._toast(ctx.tr, verdict)
                if toast is not None:
                    await self._send(ctx, toast)
            if step.turn is not None:
                # The answer is stored: show what comes next (the spinner is stopped already).
                await self._render(ctx, step.turn, message)
            elif verdict == "stale" and step.found is not None:
                await self._reshow(ctx, step.found)
            await acks[0]
        finally:
            self._release(held)

    @staticmethod
    def _toast(tr: Translator, verdict: str) -> str | None:
        """What the spinner's answer says for a press with this verdict (None: nothing)."""
        if verdict == "apply":
            return None
        if verdict == "stale":
            return tr.gettext("This question is closed. Here is the current one.")
        if verdict == "closed":
            return tr.gettext("This question is closed.")
        return tr.gettext("This button is not valid.")

    @staticmethod
    async def _ack(query: CallbackQuery, toast: str | None) -> None:
        try:
            await query.answer(toast)
        except Exception as exc:
            # Any failure, not only Telegram's: nobody may be waiting for this task (the
            # handler can have ended another way). A spinner left turning loses nothing.
            log.warning("answering a button press failed: %s", type(exc).__name__)

    def _verdict(self, press: Any, owner: str, found: Found | None) -> tuple[str, Input | None]:
        """What an answer press means: ("apply", input) or a refusal and None."""
        if found is None:
            return "closed", None
        record, state, flow = found
        if not self.codec.valid(press, owner, record.id):
            # Forged, foreign or from a session that has ended: change nothing.
            return "invalid", None
        seq = seq_value(press.fields[0]) if len(press.fields) == 2 else None
        index = int(press.fields[1]) if len(press.fields) == 2 and press.fields[1].isdigit() else -1
        if seq != state.seq:
            return "stale", None
        codes, _ = presenter.answers(flow, current_ask(flow, state))
        if not 0 <= index < len(codes):
            return "invalid", None
        return "apply", self._input_for(codes, codes[index], state)

    @staticmethod
    def _input_for(codes: tuple[str, ...], code: str, state: State) -> Input:
        if code == BACK:
            return Back()
        if code == SKIP:
            return Skip()
        if code == DONE:
            return Choice(tuple(state.pending.get("selection", ())))
        if DONE in codes:
            return Toggle(code)
        return Choice((code,))

    # ------------------------------------------------------------------ turns

    async def _start_flow(self, flow_id: str, ctx: Context) -> None:
        flow = self.runtime.flows[flow_id]
        if not self.desk.may_run(ctx.role, flow):
            await self._send(ctx, ctx.tr.gettext("You are not allowed to do that."))
            return
        consent = flow.flow.requires_consent
        if consent is not None and not await self.db(
            self.service.consent_given, ctx.owner, consent
        ):
            # A screening that needs consent starts with the consent explanation.
            await self.db(self.service.update_profile, ctx.owner, then=flow_id)
            await self._send(
                ctx,
                ctx.tr.gettext(
                    "This screening needs the person's consent first. The consent explanation "
                    "starts now; the screening follows if they agree."
                ),
            )
            flow_id = consent
        turn = await self.db(self.service.begin, ctx.owner, flow_id)
        await self._render(ctx, turn, None)

    async def _render(self, ctx: Context, turn: Turn, edit: Message | None) -> None:
        """Show a turn's events: the first text edits the pressed message, the rest follow."""
        flow = turn.flow
        blocks: list[tuple[str, Rows | None]] = []
        ended = None
        outcome: OutcomeReached | None = None
        for event in turn.events:
            if isinstance(event, Ask):
                blocks.append(self._question(ctx, turn, event))
            elif isinstance(event, Feedback):
                text = presenter.feedback(ctx.tr, flow, event.step_id, event.correct)
                blocks.append((esc(directional(text, ctx.tr.rtl)), None))
            elif isinstance(event, Explain):
                voice = self._voice(ctx, flow)[0]
                text = presenter.explanation(voice, flow, event.step_id)
                blocks.append((esc(directional(text, voice.rtl)), None))
            elif isinstance(event, OutcomeReached):
                outcome = event
                # A consent outcome is for the person; every other outcome for the practitioner.
                voice = self._voice(ctx, flow)[0] if flow.flow.kind is Kind.CONSENT else ctx.tr
                text = directional(presenter.outcome(voice, flow, event), voice.rtl)
                blocks.append((esc(text), self._keep_button(ctx, flow)))
            elif isinstance(event, Ended):
                ended = event
                if event.reason in ("cancelled", "expired", "failed"):
                    blocks.append(
                        (esc(ctx.tr.gettext("Stopped. Nothing more will be asked.")), None)
                    )
        for number, (text, rows) in enumerate(blocks):
            if number == 0 and edit is not None and await self._edit(ctx, edit, text, rows):
                continue
            await self._send_html(ctx, text, self._keyboard(rows) if rows else None)
        if ended is not None:
            await self._after_end(ctx, flow, outcome)

    async def _after_end(
        self, ctx: Context, flow: LoadedFlow, outcome: OutcomeReached | None
    ) -> None:
        delay = flow.flow.delete_messages_seconds
        if delay is not None:
            at = self.service.clock() + timedelta(seconds=delay)
            await self.db(self.store.schedule_deletion, ctx.owner, at)
        # Set when the consent began, in an earlier update: the profile read by this one
        # has it.
        then = ctx.profile.get("then")
        if flow.flow.kind is Kind.CONSENT and then:
            await self.db(self.service.update_profile, ctx.owner, then=None)
            if outcome is not None and outcome.outcome_id == "given" and then in self.runtime.flows:
                turn = await self.db(self.service.begin, ctx.owner, then)
                await self._render(ctx, turn, None)

    def _voice(self, ctx: Context, flow: LoadedFlow) -> tuple[Translator, Translator | None]:
        """Who a flow speaks to: (first language, second language or None).

        Consent is given whole in the respondent's language; a screening shows the
        respondent's language first and the responder's below; everything else is the
        person's own language only.
        """
        other = ctx.respondent
        if other is None or other.language == ctx.tr.language:
            return ctx.tr, None
        if flow.flow.kind is Kind.CONSENT:
            return other, None
        if flow.flow.kind is Kind.SCREENING:
            return other, ctx.tr
        return ctx.tr, None

    def _question(self, ctx: Context, turn: Turn, ask: Ask) -> tuple[str, Rows | None]:
        first, second = self._voice(ctx, turn.flow)
        prompt = presenter.prompt(first, turn.flow, ask)
        if second is not None:
            own = presenter.prompt(second, turn.flow, ask)
            prompt = Prompt(
                header=own.header,
                body=directional(prompt.body, first.rtl)
                + "\n\n"
                + directional(own.body, second.rtl),
                actions=tuple(
                    Action(
                        a.code,
                        a.label if a.label == b.label else f"{a.label} · {b.label}",
                        a.chosen,
                    )
                    for a, b in zip(prompt.actions, own.actions, strict=True)
                ),
                typed=prompt.typed,
            )
        else:
            prompt = Prompt(
                directional(prompt.header, first.rtl),
                directional(prompt.body, first.rtl),
                prompt.actions,
                prompt.typed,
            )
        rows: Rows = []
        answers = [
            (i, a)
            for i, a in enumerate(prompt.actions)
            if not a.code.startswith("@") or a.code == DONE
        ]
        nav = [(i, a) for i, a in enumerate(prompt.actions) if a.code in (BACK, SKIP)]
        short = all(len(a.label) <= 18 for _, a in answers)
        row: list[tuple[str, str]] = []
        for index, action in answers:
            label = ("✅ " if action.chosen else "") + action.label
            row.append(
                (
                    label,
                    self.codec.pack(ctx.owner, turn.session_id, "a", seq_code(ask.seq), str(index)),
                )
            )
            if not short or len(row) == 2:
                rows.append(row)
                row = []
        if row:
            rows.append(row)
        if nav:
            rows.append(
                [
                    (
                        a.label,
                        self.codec.pack(ctx.owner, turn.session_id, "a", seq_code(ask.seq), str(i)),
                    )
                    for i, a in nav
                ]
            )
        text = f"<b>{esc(prompt.header)}</b>\n\n{esc(prompt.body)}"
        return text, rows or None

    def _keep_button(self, ctx: Context, flow: LoadedFlow) -> Rows | None:
        if flow.flow.delete_messages_seconds is None:
            return None
        label = ctx.tr.gettext("Keep these messages")
        return [[(label, self.codec.pack(ctx.owner, "", "k"))]]

    @staticmethod
    def _keyboard(rows: Rows) -> InlineKeyboardMarkup:
        return InlineKeyboardMarkup(
            [[InlineKeyboardButton(text, callback_data=data) for text, data in row] for row in rows]
        )

    async def _reshow(self, ctx: Context, found: Found | None = None) -> None:
        """Send the current question again (after a stale press or unexpected input)."""
        if found is None:
            found = await self.db(self.service.current, ctx.owner)
        if found is None:
            return
        record, state, flow = found
        turn = Turn(record.id, flow, state, [current_ask(flow, state)])
        await self._render(ctx, turn, None)

    # ------------------------------------------------------------------ menus and commands

    async def _menu(self, command: str, ctx: Context) -> None:
        _ = ctx.tr.gettext
        kinds = MENUS[command]
        rows = []
        for index, flow_id in enumerate(self.flow_ids):
            flow = self.runtime.flows[flow_id]
            if flow.flow.kind not in kinds or flow_id.startswith("demo_"):
                continue
            if not self.desk.may_run(ctx.role, flow):
                continue
            title = ctx.tr.flow(flow_id, "@flow", "title", flow.flow.title)
            rows.append([(title, self.codec.pack(ctx.owner, "", "m", str(index)))])
        intro = {
            "start": _("Welcome to Waymark. Choose a checklist, or send /help."),
            "screen": _(
                "Choose a screening. A screening supports your decision; it never identifies "
                "a victim."
            ),
            "consent": _("Choose the consent explanation to give the person, in their language."),
            "checklist": _("Choose a checklist."),
            "quiz": _("Choose a quiz."),
        }[command]
        if ctx.role == "none":
            intro = _(
                "Waymark is open to team members. Ask your supervisor for an invitation link."
            )
        found = await self.db(self.service.current, ctx.owner)
        if found is not None:
            intro += "\n\n" + _(
                "You have a checklist open; choosing another one ends it. Send /cancel to stop it."
            )
        if not rows and ctx.role != "none":
            intro += "\n\n" + _("There is nothing here for your role.")
        await self._send(ctx, intro, self._keyboard(rows) if rows else None)

    async def _language_menu(self, ctx: Context) -> None:
        def rows(kind: str) -> list[list[tuple[str, str]]]:
            out = []
            for code in self.languages:
                # Each language is named in its own script, with its review status.
                name = Locale.parse(code).get_display_name(code) or code
                if review_status(code) == "draft":
                    name += f" ({ctx.tr.gettext('draft translation')})"
                out.append([(name, self.codec.pack(ctx.owner, "", kind, code))])
            return out

        await self._send(ctx, ctx.tr.gettext("Choose your language."), self._keyboard(rows("l")))
        respondent = rows("r")
        respondent.insert(
            0, [(ctx.tr.gettext("Same as mine"), self.codec.pack(ctx.owner, "", "r", "-"))]
        )
        await self._send(
            ctx,
            ctx.tr.gettext(
                "Which language does the person you screen read? Screening questions are then "
                "shown in their language first, and the consent explanation wholly in it."
            ),
            self._keyboard(respondent),
        )

    def _help(self, tr: Translator) -> str:
        lines = [tr.gettext("Waymark walks you through checklists, one question at a time.")]
        lines += [f"/{name} — {tr.gettext(text)}" for name, text in COMMANDS]
        lines.append(
            tr.gettext(
                "Only answer codes are kept, encrypted, and they expire by themselves. Typed "
                "text is not kept unless a checklist says so. /x ends at once and deletes "
                "this conversation."
            )
        )
        return "\n".join(lines)

    async def _cancel(self, ctx: Context) -> None:
        turn = await self.db(self.service.cancel, ctx.owner)
        if turn is None:
            await self._send(ctx, ctx.tr.gettext("There is nothing to stop."))
            return
        await self._render(ctx, turn, None)

    async def _forget(self, ctx: Context, message: Message | None) -> None:
        await self._delete_conversation(ctx)
        removed = await self.db(self.service.forget, ctx.owner)
        await self.db(self.teams.erase_owner, ctx.owner)
        log.info("forget: %d rows erased (owner %s…)", removed, ctx.owner[:6])
        if message is not None:
            with contextlib.suppress(TelegramError):
                await message.delete()
        await self.runtime_bot.send_message(
            ctx.chat_id,
            ctx.tr.gettext("Everything Waymark held about you has been erased."),
            protect_content=True,
        )

    async def _quick_exit(self, ctx: Context) -> None:
        found = await self.db(self.service.current, ctx.owner)
        if found is not None:
            await self.db(self.service.erase_session, found[0].id)
        await self._delete_conversation(ctx)
        log.info("quick exit (owner %s…)", ctx.owner[:6])

    async def _delete_conversation(self, ctx: Context) -> None:
        refs = await self.db(self.store.messages_of, ctx.owner, now=self.service.clock())
        await self._delete_refs(refs)

    async def _delete_refs(self, refs: list[Any]) -> None:
        by_chat: defaultdict[int, list[Any]] = defaultdict(list)
        for ref in refs:
            by_chat[ref.chat_id].append(ref)
        for chat_id, items in by_chat.items():
            for start in range(0, len(items), 100):
                batch = items[start : start + 100]
                with contextlib.suppress(BadRequest, Forbidden):
                    await self.runtime_bot.delete_messages(chat_id, [r.message_id for r in batch])
                await self.db(self.store.forget_messages, [r.row_id for r in batch])

    # ------------------------------------------------------------------ sending

    runtime_bot: Any = None  # set by build_application: the Application's Bot

    async def _remember(self, ctx: Context, message_id: int) -> None:
        await self.db(
            self.store.remember_message,
            ctx.owner,
            ctx.chat_id,
            message_id,
            now=self.service.clock(),
            profile_expires_at=self.service.profile_expiry(),
        )

    async def _send(
        self, ctx: Context, text: str, markup: InlineKeyboardMarkup | None = None
    ) -> None:
        await self._send_html(ctx, esc(text), markup)

    async def _send_html(
        self, ctx: Context, html_text: str, markup: InlineKeyboardMarkup | None
    ) -> None:
        parts = chunks(html_text)
        for number, part in enumerate(parts):
            # Every message is protected from forwarding and saving. (Not through PTB's
            # Defaults: those leak protect_content into editMessageText, which rejects it.)
            sent = await self.runtime_bot.send_message(
                ctx.chat_id,
                part,
                parse_mode=ParseMode.HTML,
                protect_content=True,
                reply_markup=markup if number == len(parts) - 1 else None,
            )
            await self._remember(ctx, sent.message_id)

    async def _edit(
        self, ctx: Context, message: Message, html_text: str, rows: Rows | None
    ) -> bool:
        if len(html_text) > 4000:
            return False
        try:
            # Through do_api_request, without a return type: the Bot API answers an edit with
            # the whole edited message, which ``Message.edit_text`` would build into PTB
            # objects (the keyboard included) that nothing here reads; and the keyboard goes
            # as the JSON the API takes, not built into PTB objects to be turned back into
            # it. Together about 0.25 ms of a press's 3.4 on PostgreSQL (docs/benchmarks.md,
            # "The edit as the API takes it"). Same request, same rate limiter, same errors.
            await self.runtime_bot.do_api_request(
                "editMessageText",
                api_kwargs={
                    "chat_id": message.chat_id,
                    "message_id": message.message_id,
                    "text": html_text,
                    "parse_mode": ParseMode.HTML,
                    "reply_markup": _markup_json(rows) if rows else None,
                },
            )
        except BadRequest as exc:
            # "Not modified" means it already shows this; anything else: send a new message.
            return "not modified" in str(exc).lower()
        return True

    # ------------------------------------------------------------------ background work

    async def start_background(self, app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        """Register commands and start the purge and message-cleanup loops."""
        self.runtime_bot = app.bot
        with contextlib.suppress(TelegramError):
            await app.bot.set_my_commands([BotCommand(n, d) for n, d in COMMANDS])
        settings = self.runtime.settings
        self._tasks = [
            asyncio.create_task(self._every(settings.purge_interval, self._purge)),
            asyncio.create_task(self._every(CLEANUP_SECONDS, self._cleanup)),
            asyncio.create_task(self._every(SWEEP_SECONDS, self._sweep)),
            asyncio.create_task(self._every(settings.outbox_interval, self.teams_ui.send_outbox)),
            asyncio.create_task(self._every(REMIND_SECONDS, self.teams_ui.remind_and_escalate)),
            asyncio.create_task(self._every(DIGEST_CHECK_SECONDS, self.teams_ui.digests)),
        ]

    async def stop_background(self, app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        """Stop the background loops."""
        del app
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Locks still being released are released before the process stops. (The executor
        # stays usable: an application may be started again with the same handlers.)
        await asyncio.gather(*self._releasing, return_exceptions=True)
        await asyncio.gather(*self._acking, return_exceptions=True)

    async def _every(self, seconds: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await job()
            except Exception:
                log.exception("background job failed")  # keep the loop alive
            await asyncio.sleep(seconds)

    async def _purge(self) -> None:
        await self.db(self._purge_once)

    def _purge_once(self) -> None:
        # One worker purges at a time; the others skip this round.
        with try_exclusive(self.store.engine, "purge") as mine:
            if not mine:
                return
            self.teams.purge(now=self.service.clock())
            counts = self.store.purge(now=self.service.clock())
            if counts.total:
                log.info(
                    "purged %d answers, %d sessions, %d data keys",
                    counts.answers,
                    counts.sessions,
                    counts.data_keys,
                )

    async def _sweep(self) -> None:
        # On every worker (the purge runs on one at a time), in a loop of its own (no
        # database call can hold it up): sessions kept warm in memory go when unused for
        # long or expired, even on a worker that gets no more updates.
        self.store.sweep_warm(now=self.service.clock())

    async def _cleanup(self) -> None:
        due = await self.db(self.store.due_messages, now=self.service.clock())
        if due:
            await self._delete_refs(due)
            log.info("deleted %d scheduled messages", len(due))


def build_application(
    runtime: Runtime, *, rate_limit: bool = True
) -> tuple[Application[Any, Any, Any, Any, Any, Any], WaymarkBot]:
    """Build the python-telegram-bot Application with Waymark's one handler.

    Args:
        runtime: The runtime.
        rate_limit: Keep within Telegram's limits (about 30 messages a second overall) with
            PTB's AIORateLimiter. Only a benchmark against a bare bot turns it off.
    """
    settings = runtime.settings
    assert settings.bot_token is not None
    waymark = WaymarkBot(runtime)
    builder: ApplicationBuilder[Any, Any, Any, Any, Any, Any] = (
        ApplicationBuilder()
        .token(settings.bot_token.get_secret_value())
        # Bounded: each update in flight may hold two pool connections (its chat's lock and
        # its work); more chats than this wait their turn instead of exhausting the pool.
        .concurrent_updates(MAX_IN_FLIGHT)
        # aiohttp rather than PTB's httpx transport: see bot/http.py for the measured why.
        .request(AiohttpRequest())
        # Long polling holds its one connection for the whole poll: a pool of its own.
        .get_updates_request(AiohttpRequest(connection_pool_size=1))
        .post_init(waymark.start_background)
        .post_shutdown(waymark.stop_background)
    )
    if rate_limit:
        builder = builder.rate_limiter(AIORateLimiter(max_retries=3))
    if settings.telegram_base_url:
        base = settings.telegram_base_url.rstrip("/")
        builder = builder.base_url(base).base_file_url(base.replace("/bot", "/file/bot"))
    app = builder.build()
    # PTB warns when do_api_request calls a method it has a typed call for; WaymarkBot._edit
    # does so on purpose (see there). Only that one warning is silenced.
    warnings.filterwarnings("ignore", message=_EDIT_WARNING, category=PTBUserWarning)
    app.add_handler(TypeHandler(Update, waymark.handle))
    app.add_error_handler(_on_error)
    waymark.runtime_bot = app.bot
    return app, waymark


async def _on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    # Only the error's type and message: an update can carry answer text and ids.
    error = context.error
    log.error("update failed: %s: %s", type(error).__name__, str(error)[:200])


def run_bot(runtime: Runtime, *, webhook: bool) -> int:
    """Run the bot until SIGTERM or SIGINT; return the exit status."""
    app, _ = build_application(runtime)
    if webhook:
        from bot.webhook import serve_webhook  # noqa: PLC0415 - tornado only for webhooks

        return asyncio.run(serve_webhook(app, runtime.settings))
    # run_polling installs SIGTERM/SIGINT handlers and stops gracefully on them.
    app.run_polling(
        allowed_updates=["message", "callback_query", "my_chat_member"],
        stop_signals=(signal.SIGTERM, signal.SIGINT),
    )
    return 0
