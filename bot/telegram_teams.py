"""Teams on Telegram: invitations, members, alerts with acknowledgement, digests.

Every command and every button press checks the person's role on the server (``TeamDesk``)
from the stored membership; a button carries no authority of its own.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from telegram import CallbackQuery, InlineKeyboardMarkup, Message
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, RetryAfter, TelegramError

from bot import digest
from bot.i18n import Translator
from bot.teams_desk import NO_TEAM, TeamDesk
from bot.text import clean_input, esc
from storage.teams import InvitationInvalid, OutboxItem, Teams

if TYPE_CHECKING:
    from bot.callback_data import Press
    from bot.telegram_app import Context, WaymarkBot

log = logging.getLogger("waymark.teams")
MAX_HANDLE = 32


class TeamUI:
    """Team commands, presses and background senders for one bot."""

    def __init__(self, bot: WaymarkBot, desk: TeamDesk, teams: Teams) -> None:
        self.bot = bot
        self.desk = desk
        self.teams = teams

    @property
    def now(self) -> Any:
        """The clock."""
        return self.desk.now()

    async def _team_of(self, ctx: Context) -> str | None:
        """The team a supervisor manages, or the one an admin selected with /teams."""
        if ctx.role == "admin":
            profile = await self.bot.db(self.bot.service.profile, ctx.owner)
            team = profile.get("team")
            return str(team) if team else None
        if ctx.role == "supervisor" and ctx.member is not None:
            return ctx.member.team_id
        return None

    async def _refuse(self, ctx: Context) -> None:
        await self.bot._send(ctx, ctx.tr.gettext("You are not allowed to do that."))

    # ------------------------------------------------------------------ commands

    async def command(self, command: str, arg: str, ctx: Context) -> bool:
        """Handle a team command; False if it is not one."""
        _ = ctx.tr.gettext
        send = self.bot._send
        if command == "start" and arg:
            await self._invited(arg.strip(), ctx)
            return True
        if command == "newteam":
            if ctx.role != "admin":
                await self._refuse(ctx)
                return True
            name = clean_input(arg)[:64]
            if not name:
                await send(ctx, _("Send /newteam followed by the team's name."))
                return True
            new_team = await self.bot.db(self.teams.create_team, name, now=self.now)
            await self.bot.db(self.bot.service.update_profile, ctx.owner, team=new_team)
            await send(ctx, _("Team created. Send /invite to invite its supervisors."))
            return True
        if command == "teams":
            if ctx.role != "admin":
                await self._refuse(ctx)
                return True
            teams = await self.bot.db(self.teams.teams, now=self.now)
            rows = [[(name, self.bot.codec.pack(ctx.owner, "", "t", tid))] for tid, name in teams]
            text = _("Choose the team to manage.") if rows else _("There is no team yet.")
            await send(ctx, text, self.bot._keyboard(rows) if rows else None)
            return True
        if command == "invite":
            await self._invite_menu(ctx)
            return True
        if command == "members":
            await self._members(ctx)
            return True
        if command == "leave":
            left = await self.bot.db(self.teams.leave, ctx.owner)
            await send(ctx, _("You have left your team.") if left else _("You are not in a team."))
            return True
        if command == "digest":
            team = await self._team_of(ctx)
            if team is None:
                await self._refuse(ctx)
                return True
            await send(ctx, await self._digest_text(team, ctx.tr))
            return True
        return False

    async def _invite_menu(self, ctx: Context) -> None:
        _ = ctx.tr.gettext
        team = await self._team_of(ctx)
        if team is None:
            if ctx.role == "admin":
                await self.bot._send(
                    ctx, _("First create a team with /newteam, or choose one with /teams.")
                )
            else:
                await self._refuse(ctx)
            return
        roles = ["supervisor"] if ctx.role == "admin" else ["responder", "trainee"]
        labels = {
            "supervisor": _("Supervisor"),
            "responder": _("Responder"),
            "trainee": _("Trainee"),
        }
        rows = [[(labels[r], self.bot.codec.pack(ctx.owner, "", "i", r))] for r in roles]
        await self.bot._send(ctx, _("Whom do you want to invite?"), self.bot._keyboard(rows))

    async def _members(self, ctx: Context) -> None:
        _ = ctx.tr.gettext
        team = await self._team_of(ctx)
        if team is None:
            await self._refuse(ctx)
            return
        members = await self.bot.db(self.teams.members, team, now=self.now)
        if not members:
            await self.bot._send(ctx, _("The team has no members yet."))
            return
        labels = {
            "supervisor": _("Supervisor"),
            "responder": _("Responder"),
            "trainee": _("Trainee"),
        }
        rows = []
        for m in members:
            if m.owner == ctx.owner:
                continue
            label = _("Revoke {handle} ({role})").format(handle=m.handle, role=labels[m.role])
            rows.append([(label, self.bot.codec.pack(ctx.owner, "", "v", m.owner))])
        listing = "\n".join(f"• {m.handle} — {labels[m.role]}" for m in members)
        await self.bot._send(
            ctx, _("Members:") + "\n" + listing, self.bot._keyboard(rows) if rows else None
        )

    async def _invited(self, code: str, ctx: Context) -> None:
        _ = ctx.tr.gettext
        found = await self.bot.db(self.teams.peek_invitation, code, now=self.now)
        if found is None:
            await self.bot._send(ctx, _("This invitation is unknown, already used or expired."))
            return
        await self.bot.db(self.bot.service.update_profile, ctx.owner, invite=code)
        await self.bot._send(
            ctx,
            _(
                "Welcome. Choose a short display handle your team will see (no real name is "
                "needed), and send it as a message."
            ),
        )

    async def typed(self, text: str, ctx: Context) -> bool:
        """A typed handle completing an invitation; False if none is pending."""
        code = ctx.profile.get("invite")
        if not code:
            return False
        _ = ctx.tr.gettext
        handle = clean_input(text)[:MAX_HANDLE]
        if not handle:
            await self.bot._send(ctx, _("Please send a short handle."))
            return True
        await self.bot.db(self.bot.service.update_profile, ctx.owner, invite=None)
        try:
            member = await self.bot.db(
                self.teams.join,
                code,
                ctx.owner,
                handle,
                ctx.chat_id,
                now=self.now,
                expires_at=self.desk.member_expiry(),
            )
        except InvitationInvalid:
            await self.bot._send(ctx, _("This invitation is unknown, already used or expired."))
            return True
        labels = {
            "supervisor": _("Supervisor"),
            "responder": _("Responder"),
            "trainee": _("Trainee"),
        }
        await self.bot._send(
            ctx,
            _("You joined the team as {role}. Send /start to begin.").format(
                role=labels[member.role]
            ),
        )
        return True

    # ------------------------------------------------------------------ presses

    async def press(
        self, press: Press, ctx: Context, query: CallbackQuery, message: Message | None
    ) -> bool:
        """Handle a team button (already MAC-checked); False if it is not one."""
        _ = ctx.tr.gettext
        if press.kind == "t" and press.fields:
            if ctx.role != "admin":
                await self._refuse(ctx)
                return True
            await self.bot.db(self.bot.service.update_profile, ctx.owner, team=press.fields[0])
            await self.bot._send(
                ctx, _("Team chosen. /invite, /members and /digest now apply to it.")
            )
            return True
        if press.kind == "i" and press.fields:
            role = press.fields[0]
            team = await self._team_of(ctx)
            allowed = {"admin": ("supervisor",), "supervisor": ("responder", "trainee")}
            if team is None or ctx.role is None or role not in allowed.get(ctx.role, ()):
                await self._refuse(ctx)
                return True
            ttl = timedelta(seconds=self.desk.settings.seconds("invite_ttl"))
            code = await self.bot.db(
                self.teams.invite, team, role, created_by=ctx.owner, now=self.now, ttl=ttl
            )
            username = self.bot.runtime_bot.username
            link = f"https://t.me/{username}?start={code}"
            await self.bot._send(
                ctx,
                _(
                    "Send this single-use link to the person you invite. It expires in {days} days:"
                ).format(days=ctx.tr.number(round(ttl.total_seconds() / 86400)))
                + f"\n{link}",
            )
            return True
        if press.kind == "v" and press.fields:
            team = await self._team_of(ctx)
            target = press.fields[0]
            member = await self.bot.db(self.teams.member, target, now=self.now)
            if team is None or member is None or member.team_id != team:
                await self._refuse(ctx)
                return True
            await self.bot.db(self.teams.revoke, team, target)
            await self.bot._send(
                ctx, _("{handle} can no longer use the team.").format(handle=member.handle)
            )
            return True
        if press.kind == "c" and press.fields:
            await self._ack(press.fields[0], ctx, message)
            return True
        return False

    async def _ack(self, alert_id: str, ctx: Context, message: Message | None) -> None:
        _ = ctx.tr.gettext
        alert = await self.bot.db(self.teams.alert, alert_id, now=self.now)
        allowed = alert is not None and (
            ctx.role == "admin"
            or (
                ctx.role == "supervisor"
                and ctx.member is not None
                and ctx.member.team_id == alert.team_id
            )
        )
        if alert is None or not allowed:
            await self._refuse(ctx)
            return
        first = await self.bot.db(self.teams.ack, alert_id, ctx.owner, now=self.now)
        if message is not None:
            with contextlib.suppress(TelegramError):
                await message.edit_reply_markup(None)
        text = _("Acknowledged. Thank you.") if first else _("This alert was already acknowledged.")
        await self.bot._send(ctx, text)

    # ------------------------------------------------------------------ outbox

    async def _tr_for(self, owner: str) -> Translator:
        profile = await self.bot.db(self.bot.service.profile, owner)
        lang = profile.get("lang")
        return Translator(
            lang if lang in self.bot.languages else self.desk.settings.default_language
        )

    def _alert_text(self, tr: Translator, payload: dict[str, Any], kind: str, case: str) -> str:
        _ = tr.gettext
        flow = self.bot.runtime.flows.get(payload.get("flow", ""))
        tier = payload.get("tier", "")
        categories = payload.get("categories", [])
        if flow is not None:
            outcome = flow.outcomes.get(tier)
            tier = tr.flow(flow.id, tier, "title", outcome.title) if outcome else tier
            titles = {c.id: c.title for c in flow.flow.scoring.categories}
            categories = [tr.flow(flow.id, f"#{c}", "title", titles.get(c, c)) for c in categories]
        heading = {
            "alert": _("Screening alert"),
            "reminder": _("Reminder: this alert has not been acknowledged"),
            "escalation": _("Escalation: nobody has acknowledged this alert"),
        }[kind]
        lines = [
            f"⚠️ {heading}",
            _("Case: {case}").format(case=case),
            _("Outcome: {tier}").format(tier=tier),
            _("Indicator categories: {categories}").format(categories=", ".join(categories) or "—"),
            _("Possible child: {answer}").format(
                answer=_("Yes") if payload.get("child") else _("No")
            ),
            _("Time: {time}").format(time=_when(tr, payload.get("time", ""))),
            _("Responder: {handle}").format(handle=payload.get("responder", "")),
        ]
        return "\n".join(lines)

    async def _allowed_recipient(self, item: OutboxItem) -> bool:
        if item.kind == "escalation" and item.recipient in self.desk.admin_owners():
            return True
        member = await self.bot.db(self.teams.member, item.recipient, now=self.now)
        return member is not None and member.role == "supervisor" and member.team_id == item.team_id

    async def send_outbox(self) -> None:
        """Send what is due: each row leased to this worker, marked sent once accepted."""
        items = await self.bot.db(self.teams.lease_due, now=self.now, lease=timedelta(seconds=60))
        for item in items:
            if not await self._allowed_recipient(item):
                await self.bot.db(self.teams.drop, item.id)  # revoked: receives nothing
                continue
            tr = await self._tr_for(item.recipient)
            markup: InlineKeyboardMarkup | None = None
            if item.kind == "digest":
                text = await self._digest_text(item.team_id, tr)
            else:
                alert = await self.bot.db(self.teams.alert, item.alert_id or "", now=self.now)
                if alert is None or (item.kind != "alert" and alert.acked_at is not None):
                    await self.bot.db(self.teams.drop, item.id)
                    continue
                case = alert.id[:8].upper()
                text = self._alert_text(tr, alert.payload, item.kind, case)
                markup = self.bot._keyboard(
                    [
                        [
                            (
                                tr.gettext("Acknowledge"),
                                self.bot.codec.pack(item.recipient, "", "c", alert.id),
                            )
                        ]
                    ]
                )
            try:
                await self.bot.runtime_bot.send_message(
                    int(item.body["chat"]),
                    esc(text),
                    parse_mode=ParseMode.HTML,
                    reply_markup=markup,
                    protect_content=True,
                )
            except RetryAfter as exc:
                wait = (
                    exc.retry_after
                    if isinstance(exc.retry_after, int | float)
                    else exc.retry_after.total_seconds()
                )
                await self.bot.db(
                    self.teams.retry_later, item.id, at=self.now + timedelta(seconds=float(wait))
                )
                continue
            except Forbidden:
                await self.bot.db(self.teams.drop, item.id)  # the person blocked the bot
                continue
            except (BadRequest, TelegramError) as exc:
                log.warning("outbox send failed (%s); will retry", type(exc).__name__)
                backoff = min(300, 5 * 2 ** min(item.attempts, 6))
                await self.bot.db(
                    self.teams.retry_later, item.id, at=self.now + timedelta(seconds=backoff)
                )
                continue
            await self.bot.db(self.teams.mark_sent, item.id, now=self.now)
            log.info("sent %s (outbox %d)", item.kind, item.id)

    async def remind_and_escalate(self) -> None:
        """Remind a team's supervisors, then escalate to the admins, while nobody acknowledges."""
        settings = self.desk.settings
        remind = timedelta(seconds=settings.seconds("alert_remind_after"))
        escalate = timedelta(seconds=settings.seconds("alert_escalate_after"))
        for alert_id in await self.bot.db(
            self.teams.unacked, now=self.now, older_than=remind, field="reminded_at"
        ):
            if await self.bot.db(self.teams.mark, alert_id, "reminded_at", now=self.now):
                alert = await self.bot.db(self.teams.alert, alert_id, now=self.now)
                if alert is None:
                    continue
                for m in await self.bot.db(
                    self.teams.members, alert.team_id, now=self.now, role="supervisor"
                ):
                    await self.bot.db(
                        self.teams.enqueue,
                        alert.team_id,
                        m.owner,
                        m.chat_id,
                        "reminder",
                        {},
                        now=self.now,
                        alert_id=alert_id,
                    )
        for alert_id in await self.bot.db(
            self.teams.unacked, now=self.now, older_than=escalate, field="escalated_at"
        ):
            if await self.bot.db(self.teams.mark, alert_id, "escalated_at", now=self.now):
                alert = await self.bot.db(self.teams.alert, alert_id, now=self.now)
                if alert is None:
                    continue
                for owner, chat_id in self.desk.admin_owners().items():
                    await self.bot.db(
                        self.teams.enqueue,
                        alert.team_id,
                        owner,
                        chat_id,
                        "escalation",
                        {},
                        now=self.now,
                        alert_id=alert_id,
                    )

    async def digests(self) -> None:
        """Queue each team's periodic digest once per period, whichever worker gets there."""
        every = self.desk.settings.seconds("digest_every")
        period = int(self.now.timestamp()) // every
        for team_id, _name in await self.bot.db(self.teams.teams, now=self.now):
            if not await self.bot.db(self.teams.claim_once, team_id, f"digest.{every}.{period}"):
                continue
            for m in await self.bot.db(
                self.teams.members, team_id, now=self.now, role="supervisor"
            ):
                await self.bot.db(
                    self.teams.enqueue, team_id, m.owner, m.chat_id, "digest", {}, now=self.now
                )

    async def _digest_text(self, team_id: str, tr: Translator) -> str:
        _ = tr.gettext
        every = max(self.desk.settings.seconds("digest_every"), 86400)
        today = self.now.date()
        since = today - timedelta(seconds=every - 1)
        counts = await self.bot.db(self.teams.counts, team_id, since=since)
        previous = await self.bot.db(
            self.teams.counts,
            team_id,
            since=since - timedelta(seconds=every),
            until=since - timedelta(days=1),
        )
        d = digest.build(counts, previous)
        few = _("fewer than 11")
        lines = [_("Team digest since {day} (counts only)").format(day=tr.date(since))]
        lines.append(_("Screenings: {n}").format(n=digest.show(d.screenings, few)))
        for tier, value in sorted(d.tiers.items()):
            lines.append(f"  • {tier}: {digest.show(value, few)}")
        if d.categories:
            lines.append(_("Most frequent indicator categories:"))
            lines += [f"  • {c}: {digest.show(v, few)}" for c, v in d.categories]
        lines.append(
            _("Consent given: {given}; declined: {declined}").format(
                given=digest.show(d.consent["given"], few),
                declined=digest.show(d.consent["declined"], few),
            )
        )
        lines.append(_("Quizzes completed: {n}").format(n=digest.show(d.quizzes, few)))
        for topic, percent in sorted(d.topics.items()):
            lines.append(f"  • {topic}: {percent}%")
        if d.trend is None:
            lines.append(_("Too few screenings to speak of a trend."))
        else:
            lines.append(_("Change against the previous period: {n}").format(n=f"{d.trend:+d}"))
        return "\n".join(lines)


def _when(tr: Translator, iso: str) -> str:
    """An alert's time in the reader's conventions (the payload keeps ISO 8601, UTC)."""
    try:
        return tr.datetime(datetime.fromisoformat(iso))
    except ValueError:
        return iso


__all__ = ["NO_TEAM", "TeamUI"]
