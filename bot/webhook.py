"""Webhook mode: a small tornado server that checks Telegram's secret in constant time.

python-telegram-bot's own webhook server compares the ``secret_token`` header with ``!=``;
here it is ``hmac.compare_digest``, and every other request gets 403 or 405 without
touching the application. Put it behind any TLS-terminating reverse proxy.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import signal
from typing import Any

import tornado.httpserver
import tornado.web
from telegram import Update
from telegram.ext import Application

from bot.settings import Settings

log = logging.getLogger("waymark.webhook")
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name, not a secret
#: Largest update body accepted; real updates are a few kilobytes.
MAX_BODY = 1 << 20


class _UpdateHandler(tornado.web.RequestHandler):
    def initialize(self, app: Application[Any, Any, Any, Any, Any, Any], secret: bytes) -> None:
        self.app = app
        self.secret = secret

    async def post(self) -> None:
        given = self.request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, self.secret):
            self.set_status(403)
            return
        try:
            data = json.loads(self.request.body)
            update = Update.de_json(data, self.app.bot)
        except (ValueError, TypeError, KeyError):
            self.set_status(400)
            return
        await self.app.update_queue.put(update)
        self.set_status(200)

    def get(self) -> None:
        self.set_status(405)


def make_webhook_app(
    app: Application[Any, Any, Any, Any, Any, Any], secret: str, path: str
) -> tornado.web.Application:
    """The tornado application serving ``path``."""
    return tornado.web.Application(
        [(path, _UpdateHandler, {"app": app, "secret": secret.encode()})]
    )


def webhook_path(settings: Settings) -> str:
    """The URL path updates are posted to (the path part of WAYMARK_WEBHOOK_URL)."""
    from urllib.parse import urlparse  # noqa: PLC0415

    if settings.webhook_url:
        return urlparse(settings.webhook_url).path or "/"
    return "/telegram"


async def serve_webhook(app: Application[Any, Any, Any, Any, Any, Any], settings: Settings) -> int:
    """Serve updates until SIGTERM or SIGINT; return the exit status."""
    if settings.webhook_secret is None or not settings.webhook_url:
        log.error("webhook mode needs WAYMARK_WEBHOOK_URL and WAYMARK_WEBHOOK_SECRET")
        return 2
    secret = settings.webhook_secret.get_secret_value()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with app:
        # PTB calls post_init/post_shutdown only inside run_polling/run_webhook; this server
        # replaces those, so it calls them itself (background loops, command registration).
        if app.post_init is not None:
            await app.post_init(app)
        await app.start()
        # Listen before telling Telegram where to post, so no update meets a closed port.
        server = tornado.httpserver.HTTPServer(
            make_webhook_app(app, secret, webhook_path(settings)), max_body_size=MAX_BODY
        )
        server.listen(settings.webhook_port, address=settings.webhook_listen)
        log.info("webhook listening on %s:%d", settings.webhook_listen, settings.webhook_port)
        await app.bot.set_webhook(
            settings.webhook_url,
            secret_token=secret,
            allowed_updates=["message", "callback_query", "my_chat_member"],
        )
        await stop.wait()
        server.stop()
        await app.stop()
        if app.post_shutdown is not None:
            await app.post_shutdown(app)
    return 0
