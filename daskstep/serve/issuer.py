"""The server's own OIDC issuer, for one machine: what `reana-client login` needs of it.

reana-client 0.95 reads `/api/.well-known/openid-configuration` (issuer, the token endpoint,
`reana_cli_client_id`), then runs the device flow (`--headless`): it posts to the device
authorization endpoint, shows `verification_uri_complete`, and polls the token endpoint. A
login is approved on this machine (`daskstep serve approve CODE --user EMAIL`), not through a
page. Access tokens are JWTs signed with the server's own EC key (kept 0600 in its state, so
tokens outlive a restart); refresh tokens are random, kept as hashes, and rotated on use.

The OAuth 2 protocol is Authlib's (RFC 8628's device grant, RFC 6749's refresh grant, RFC 9068's
JWT access tokens); this module only binds it to tornado's requests and to the store.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections import defaultdict
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlparse

from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, OAuth2Payload, OAuth2Request, grants
from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidRequestError, OAuth2Error
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc8628 import (
    DEVICE_CODE_GRANT_TYPE,
    DeviceAuthorizationEndpoint,
    DeviceCodeGrant,
    DeviceCredentialDict,
)
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from daskstep.serve.store import Store, User

CLIENT_ID = "reana-cli"
ACCESS_SECONDS = 900  # the client refreshes a minute before
REFRESH_SECONDS = 30 * 24 * 3600
DEVICE_SECONDS = 600
POLL_SECONDS = 1  # the client waits this long between polls
ALG = "ES256"


class Client(ClientMixin):
    """reana-client: a public client (no secret): the device flow, the browser login to its
    loopback callback, and refreshes."""

    GRANTS = (DEVICE_CODE_GRANT_TYPE, "refresh_token", "authorization_code")

    def get_client_id(self) -> str:
        return CLIENT_ID

    def get_default_redirect_uri(self) -> str | None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        return scope or ""

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return loopback_callback(redirect_uri)

    def check_client_secret(self, client_secret: str) -> bool:
        return False

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "none"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.GRANTS


class RefreshToken:
    """A stored refresh token, as Authlib's refresh grant asks of one."""

    def __init__(self, row: Any, token: str) -> None:
        self.row, self.token = row, token

    def check_client(self, client: ClientMixin) -> bool:
        return self.row["client_id"] == client.get_client_id()

    def get_scope(self) -> str:
        return self.row["scope"] or ""

    def is_expired(self) -> bool:
        return self.row["expires_at"] < time.time()

    def is_revoked(self) -> bool:
        return bool(self.row["revoked"])


class TornadoPayload(OAuth2Payload):
    def __init__(self, request: Any) -> None:
        self._request = request

    @cached_property
    def data(self) -> dict[str, str]:
        data = {k: v[-1].decode() for k, v in self._request.query_arguments.items()}
        if self._request.body:
            data.update(parse_qsl(self._request.body.decode(), keep_blank_values=True))
        return data

    @cached_property
    def datalist(self) -> defaultdict[str, list]:
        values: defaultdict[str, list] = defaultdict(list)
        for k, v in self.data.items():
            values[k].append(v)
        return values


class TornadoRequest(OAuth2Request):
    def __init__(self, request: Any) -> None:
        super().__init__(request.method, request.full_url(), headers=request.headers)
        self.payload = TornadoPayload(request)

    @property
    def args(self) -> dict[str, str]:
        return {k: v[-1].decode() for k, v in self.payload._request.query_arguments.items()}

    @property
    def form(self) -> dict[str, str]:
        return self.payload.data


class DeviceEndpoint(DeviceAuthorizationEndpoint):
    ENDPOINT_NAME = "device_authorization"
    CLIENT_AUTH_METHODS = ["none"]  # noqa: RUF012 (Authlib's own attribute)
    EXPIRES_IN = DEVICE_SECONDS
    INTERVAL = POLL_SECONDS

    def get_verification_uri(self) -> str:
        return f"{self.server.issuer}/device"

    def create_endpoint_response(self, request: OAuth2Request) -> Any:
        """reana-client binds its device login to a PKCE pair: the challenge is kept with
        the device code, and its verifier is demanded when the tokens are fetched."""
        challenge = request.payload.data.get("code_challenge")
        if challenge and request.payload.data.get("code_challenge_method", "S256") != "S256":
            raise InvalidRequestError("code_challenge_method: only S256")
        self._challenge = challenge
        return super().create_endpoint_response(request)

    def save_device_credential(self, client_id: str, scope: str, data: dict[str, Any]) -> None:
        self.server.store.save_device(data, client_id, scope, self._challenge)


class DeviceGrant(DeviceCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["none"]  # noqa: RUF012

    def query_device_credential(self, device_code: str) -> DeviceCredentialDict | None:
        row = self.server.store.device(device_code)
        if row is None:
            return None
        if row["code_challenge"]:
            verifier = self.request.payload.data.get("code_verifier") or ""
            digest = hashlib.sha256(verifier.encode()).digest()
            given = base64.urlsafe_b64encode(digest).decode().rstrip("=")
            if not hmac.compare_digest(given, row["code_challenge"]):
                raise InvalidGrantError("code_verifier does not match the login's challenge")
        return DeviceCredentialDict(
            client_id=row["client_id"], scope=row["scope"], user_code=row["user_code"],
            expires_at=int(row["expires_at"]), device_code=device_code,
        )  # fmt: skip

    def query_user_grant(self, user_code: str) -> tuple[User, bool] | None:
        row = self.server.store.device_by_user_code(user_code)
        if row is None or row["user_id"] is None:
            return None
        user = self.server.store.user(row["user_id"])
        return (user, bool(row["approved"])) if user else None

    def should_slow_down(self, credential: DeviceCredentialDict) -> bool:
        last = self.server.store.polled(credential["device_code"])
        return last is not None and time.time() - last < POLL_SECONDS / 2

    def create_token_response(self) -> Any:
        answer = super().create_token_response()
        self.server.store.forget_device(self.request.credential["device_code"])
        return answer


class RefreshGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["none"]  # noqa: RUF012
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshToken | None:
        row = self.server.store.refresh(refresh_token)
        token = RefreshToken(row, refresh_token) if row else None
        return token if token and not token.is_expired() and not token.is_revoked() else None

    def authenticate_user(self, refresh_token: RefreshToken) -> User | None:
        return self.server.store.user(refresh_token.row["user_id"])

    def revoke_old_credential(self, refresh_token: RefreshToken) -> None:
        self.server.store.revoke_refresh(refresh_token.token)


# -- the browser login (loopback, PKCE): its page is browser_login.py ----------------------

CODE_SECONDS = 120
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def loopback_callback(uri: str) -> bool:
    """reana-client's own callback on this machine, whatever port it bound."""
    parsed = urlparse(uri)
    host = parsed.netloc.rpartition(":")[0] or parsed.netloc
    return parsed.scheme == "http" and host in LOOPBACK and parsed.path == "/callback"


class AuthorizationCode:
    """A stored code, as Authlib's grant and PKCE extension ask of one."""

    def __init__(self, row: Any) -> None:
        self.row = row
        self.code_challenge = row["code_challenge"]
        self.code_challenge_method = row["code_challenge_method"]

    def get_redirect_uri(self) -> str:
        return self.row["redirect_uri"]

    def get_scope(self) -> str:
        return self.row["scope"] or ""

    def get_nonce(self) -> None:
        return None

    def get_auth_time(self) -> None:
        return None


class CodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["none"]  # noqa: RUF012 (Authlib's own attribute)

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        data = request.payload.data
        self.server.store.save_code(
            code, request.payload.client_id, request.payload.redirect_uri,
            request.payload.scope, request.user.id, data.get("code_challenge"),
            data.get("code_challenge_method"), CODE_SECONDS,
        )  # fmt: skip

    def query_authorization_code(self, code: str, client: Any) -> AuthorizationCode | None:
        row = self.server.store.code(code)
        if row is None or row["client_id"] != client.get_client_id():
            return None
        return AuthorizationCode(row) if row["expires_at"] > time.time() else None

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        self.server.store.forget_code(authorization_code.row["code_hash"])

    def authenticate_user(self, authorization_code: AuthorizationCode) -> User | None:
        return self.server.store.user(authorization_code.row["user_id"])


class AccessTokens(JWTBearerTokenGenerator):
    def __init__(self, issuer: str, key: ECKey) -> None:
        super().__init__(
            issuer, alg=ALG, refresh_token_generator=_refresh_token,
            expires_generator=ACCESS_SECONDS,
        )  # fmt: skip
        self.key = key

    def get_jwks(self) -> Any:
        return self.key

    def get_audiences(self, client: ClientMixin, user: User, scope: str) -> str:
        return self.issuer


def _refresh_token(**_: Any) -> str:
    return secrets.token_urlsafe(48)


class Issuer(AuthorizationServer):
    """Authlib's authorization server, bound to tornado and the store."""

    def __init__(self, store: Store, issuer: str) -> None:
        super().__init__()
        self.store, self.issuer = store, issuer
        self.key = signing_key(store.state / "issuer-key.json")
        self.client = Client()
        self.register_token_generator("default", AccessTokens(issuer, self.key))
        self.register_grant(DeviceGrant)
        self.register_grant(RefreshGrant)
        self.register_grant(CodeGrant, [CodeChallenge(required=True)])
        self.register_endpoint(DeviceEndpoint(self))

    def query_client(self, client_id: str) -> Client | None:
        return self.client if client_id == CLIENT_ID else None

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        if token.get("refresh_token"):
            self.store.save_refresh(
                token["refresh_token"], request.user.id, CLIENT_ID, token.get("scope"),
                REFRESH_SECONDS,
            )  # fmt: skip
            token["refresh_expires_in"] = REFRESH_SECONDS

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        return request if isinstance(request, OAuth2Request) else TornadoRequest(request)

    def handle_response(self, status: int, body: Any, headers: Any) -> tuple[int, Any, Any]:
        return status, body, headers

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass

    def handle_error_response(self, request: Any, error: OAuth2Error) -> tuple[int, Any, Any]:
        return self.handle_response(*error(self.get_error_uri(request, error)))

    def discovery(self) -> dict[str, Any]:
        """What reana-client's `discover` reads, as REANA's server relays it."""
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/oauth/authorize",
            "token_endpoint": f"{self.issuer}/oauth/token",
            "device_authorization_endpoint": f"{self.issuer}/oauth/device",
            "jwks_uri": f"{self.issuer}/oauth/jwks",
            "reana_cli_client_id": CLIENT_ID,
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.as_dict(private=False)]}

    def user_of(self, access_token: str) -> User | None:
        """The user a bearer token names, or None: forged, expired, or of another issuer."""
        try:
            token = jwt.decode(access_token, self.key, algorithms=[ALG])
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": self.issuer},
                sub={"essential": True},
                exp={"essential": True},
            ).validate(token.claims)
        except (JoseError, ValueError):
            return None
        return self.store.user(str(token.claims["sub"]))


def signing_key(path: Path) -> ECKey:
    """The server's key: made once, kept 0600, so tokens outlive a restart."""
    if path.exists():
        return ECKey.import_key(json.loads(path.read_text()))
    key = ECKey.generate_key("P-256", parameters={"kid": secrets.token_hex(8)}, private=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(key.as_dict(private=True), out)
    return key
