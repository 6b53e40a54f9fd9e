"""`reana-client login` without `--headless`: the authorization code flow with PKCE, to the
client's loopback callback (`http://127.0.0.1:PORT/callback`, any port, as RFC 8252 says).

On one machine nobody types a password: the authorization page shows a code and the command
that approves it (`daskstep serve approve CODE --user EMAIL`, as for a device login), and
reloads itself until it is approved; then it redirects the browser to the client's callback
with an authorization code, which only the holder of the PKCE verifier can redeem. The grant,
the PKCE check and the redirect are Authlib's.
"""

from __future__ import annotations

import html
import secrets
import time
from urllib.parse import parse_qsl, urlencode

from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc8628.endpoint import create_string_user_code

from daskstep.serve.api import Base

LOGIN_SECONDS = 600


class Authorize(Base):
    """The authorization page: a code to approve on the server, then the client's callback."""

    AUTH = False

    def get(self) -> None:
        issuer = self.ctx.issuer
        login = self.get_query_argument("login", None)
        if login is None:
            try:
                issuer.get_consent_grant(self.request)
            except OAuth2Error as e:
                self.page(400, f"this login cannot go on: {e.description or e.error}")
                return
            login = f"browser:{secrets.token_urlsafe(24)}"
            user_code = create_string_user_code()
            self.ctx.store.save_browser_login(login, user_code, self.request.query, LOGIN_SECONDS)
        row = self.ctx.store.device(login)
        if row is None or row["expires_at"] < time.time() or not row["request"]:
            self.page(400, "this login expired: run reana-client login again")
            return
        if row["user_id"] is None:
            self.waiting(login, row["user_code"])
            return
        self.ctx.store.forget_device(login)
        user = self.ctx.store.user(row["user_id"])
        if not row["approved"] or user is None:
            self.page(403, "this login was refused")
            return
        query = row["request"]
        request = OAuth2Request("GET", f"{issuer.issuer}/oauth/authorize?{query}")
        request.payload = BasicOAuth2Payload(dict(parse_qsl(query, keep_blank_values=True)))
        status, _, headers = issuer.create_authorization_response(request, grant_user=user)
        location = dict(headers).get("Location")
        if status != 302 or not location:
            self.page(400, "this login cannot go on: run reana-client login again")
            return
        self.redirect(location)

    def waiting(self, login: str, user_code: str) -> None:
        again = "/oauth/authorize?" + urlencode({"login": login})
        code = html.escape(user_code)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(
            f'<!doctype html><meta http-equiv="refresh" content="2;url={html.escape(again)}">'
            f"<title>daskstep serve: log in</title><p>To log in, run on the server:</p>"
            f"<pre>daskstep serve approve {code} --user EMAIL</pre><p>This page follows on.</p>"
        )

    def page(self, status: int, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(message + "\n")
