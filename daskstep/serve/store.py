"""The server's state, in one SQLite file beside the workspaces, so that users, logins and
workflows survive a restart: `STATE/serve.db` (0600).

Only hashes of refresh tokens are kept; device codes live as long as a login takes. A
workflow's workspace is `WORKSPACES/<user id>/<workflow id>`, named by ids, never by anything a
user typed. Each call opens its own connection: the server's handlers and its run supervisor
share the file, and SQLite serialises the writers.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY, email TEXT UNIQUE NOT NULL, full_name TEXT NOT NULL, created REAL);
CREATE TABLE IF NOT EXISTS devices (
    device_code TEXT PRIMARY KEY, user_code TEXT UNIQUE NOT NULL, client_id TEXT NOT NULL,
    scope TEXT, expires_at REAL NOT NULL, user_id TEXT, approved INTEGER, last_poll REAL,
    code_challenge TEXT, request TEXT);
CREATE TABLE IF NOT EXISTS codes (
    code_hash TEXT PRIMARY KEY, client_id TEXT NOT NULL, redirect_uri TEXT, scope TEXT,
    user_id TEXT NOT NULL, code_challenge TEXT, code_challenge_method TEXT,
    expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash TEXT PRIMARY KEY, user_id TEXT NOT NULL, client_id TEXT NOT NULL, scope TEXT,
    expires_at REAL NOT NULL, revoked INTEGER DEFAULT 0);
CREATE TABLE IF NOT EXISTS workflows (
    id TEXT PRIMARY KEY, user_id TEXT NOT NULL, name TEXT NOT NULL, run_number INTEGER NOT NULL,
    status TEXT NOT NULL, created REAL NOT NULL, started REAL, finished REAL,
    workspace TEXT NOT NULL, run INTEGER, pid INTEGER, parameters TEXT, deleted INTEGER DEFAULT 0,
    UNIQUE (user_id, name, run_number));
"""
ENDED = ("finished", "failed", "stopped", "deleted")
DB = "serve.db"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class User:
    id: str
    email: str
    full_name: str

    def get_user_id(self) -> str:  # what Authlib asks of a user
        return self.id


@dataclass(frozen=True)
class Workflow:
    id: str
    user_id: str
    name: str
    run_number: int
    status: str
    created: float
    started: float | None
    finished: float | None
    workspace: Path
    run: int | None
    pid: int | None
    parameters: str | None

    @property
    def full_name(self) -> str:
        """REANA's `name.N`, as `reana-client list` shows it."""
        return f"{self.name}.{self.run_number}"


class Store:
    """The database and the workspaces' root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / ".daskstep-serve"
        self.state.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = self.state / DB
        with self.connect() as db:
            db.executescript(SCHEMA)
        os.chmod(self.path, 0o600)

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        try:
            with db:
                yield db
        finally:
            db.close()

    # -- users -----------------------------------------------------------------------------

    def user(self, user_id: str) -> User | None:
        with self.connect() as db:
            row = db.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
        return User(row["id"], row["email"], row["full_name"]) if row else None

    def user_by_email(self, email: str, create: bool = False) -> User | None:
        with self.connect() as db:
            row = db.execute("SELECT * FROM users WHERE email = ?", (email,)).fetchone()
            if row is None and create:
                user_id = str(uuid.uuid4())
                name = email.split("@")[0]
                db.execute(
                    "INSERT INTO users VALUES (?, ?, ?, ?)", (user_id, email, name, time.time())
                )
                return User(user_id, email, name)
        return User(row["id"], row["email"], row["full_name"]) if row else None

    # -- device logins ---------------------------------------------------------------------

    def save_device(
        self, data: dict[str, Any], client_id: str, scope: str | None, challenge: str | None
    ) -> None:
        with self.connect() as db:
            db.execute(
                "INSERT INTO devices (device_code, user_code, client_id, scope, expires_at, "
                "code_challenge) VALUES (?, ?, ?, ?, ?, ?)",
                (data["device_code"], data["user_code"], client_id, scope,
                 time.time() + data["expires_in"], challenge),
            )  # fmt: skip

    def save_browser_login(self, login: str, user_code: str, request: str, ttl: float) -> None:
        """A browser login waiting for its approval: the authorization request it answers."""
        with self.connect() as db:
            db.execute(
                "INSERT INTO devices (device_code, user_code, client_id, expires_at, request) "
                "VALUES (?, ?, 'browser', ?, ?)",
                (login, user_code, time.time() + ttl, request),
            )

    def save_code(
        self, code: str, client_id: str, redirect_uri: str, scope: str | None, user_id: str,
        challenge: str | None, method: str | None, ttl: float,
    ) -> None:  # fmt: skip
        with self.connect() as db:
            db.execute(
                "INSERT INTO codes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (token_hash(code), client_id, redirect_uri, scope, user_id, challenge, method,
                 time.time() + ttl),
            )  # fmt: skip

    def code(self, code: str) -> sqlite3.Row | None:
        with self.connect() as db:
            return db.execute(
                "SELECT * FROM codes WHERE code_hash = ?", (token_hash(code),)
            ).fetchone()

    def forget_code(self, code_hash: str) -> None:
        with self.connect() as db:
            db.execute("DELETE FROM codes WHERE code_hash = ?", (code_hash,))

    def device(self, device_code: str) -> sqlite3.Row | None:
        with self.connect() as db:
            return db.execute(
                "SELECT * FROM devices WHERE device_code = ?", (device_code,)
            ).fetchone()

    def device_by_user_code(self, user_code: str) -> sqlite3.Row | None:
        with self.connect() as db:
            return db.execute("SELECT * FROM devices WHERE user_code = ?", (user_code,)).fetchone()

    def polled(self, device_code: str) -> float | None:
        """When the device last polled, and now is its last poll."""
        with self.connect() as db:
            row = db.execute(
                "SELECT last_poll FROM devices WHERE device_code = ?", (device_code,)
            ).fetchone()
            db.execute(
                "UPDATE devices SET last_poll = ? WHERE device_code = ?", (time.time(), device_code)
            )
        return row["last_poll"] if row else None

    def approve(self, user_code: str, user: User, approved: bool = True) -> bool:
        """The local approval of a login: False when no pending login has that code."""
        with self.connect() as db:
            changed = db.execute(
                "UPDATE devices SET user_id = ?, approved = ? "
                "WHERE user_code = ? AND user_id IS NULL AND expires_at > ?",
                (user.id, int(approved), user_code.strip().upper(), time.time()),
            ).rowcount
        return changed == 1

    def forget_device(self, device_code: str) -> None:
        """A device code gives tokens once."""
        with self.connect() as db:
            db.execute("DELETE FROM devices WHERE device_code = ?", (device_code,))

    # -- refresh tokens --------------------------------------------------------------------

    def save_refresh(
        self, token: str, user_id: str, client_id: str, scope: str | None, ttl: float
    ) -> None:
        with self.connect() as db:
            db.execute(
                "INSERT INTO refresh_tokens VALUES (?, ?, ?, ?, ?, 0)",
                (token_hash(token), user_id, client_id, scope, time.time() + ttl),
            )

    def refresh(self, token: str) -> sqlite3.Row | None:
        with self.connect() as db:
            return db.execute(
                "SELECT * FROM refresh_tokens WHERE token_hash = ?", (token_hash(token),)
            ).fetchone()

    def revoke_refresh(self, token: str) -> None:
        with self.connect() as db:
            db.execute(
                "UPDATE refresh_tokens SET revoked = 1 WHERE token_hash = ?", (token_hash(token),)
            )

    # -- workflows -------------------------------------------------------------------------

    def create_workflow(self, user: User, name: str) -> Workflow:
        """The next run number of `name` for this user, and a fresh workspace."""
        workflow_id = str(uuid.uuid4())
        workspace = self.root / user.id / workflow_id
        with self.connect() as db:
            last = db.execute(
                "SELECT MAX(run_number) FROM workflows WHERE user_id = ? AND name = ?",
                (user.id, name),
            ).fetchone()[0]
            db.execute(
                "INSERT INTO workflows (id, user_id, name, run_number, status, created, "
                "workspace) VALUES (?, ?, ?, ?, 'created', ?, ?)",
                (workflow_id, user.id, name, (last or 0) + 1, time.time(), str(workspace)),
            )
        workspace.mkdir(mode=0o700, parents=True)
        found = self.workflow(user, workflow_id)
        assert found is not None
        return found

    def workflows(self, user: User) -> list[Workflow]:
        with self.connect() as db:
            rows = db.execute(
                "SELECT * FROM workflows WHERE user_id = ? AND deleted = 0 ORDER BY created DESC",
                (user.id,),
            ).fetchall()
        return [_workflow(r) for r in rows]

    def workflow(self, user: User, id_or_name: str) -> Workflow | None:
        """By id, `name.N`, or `name` (its latest run), among this user's workflows alone."""
        name, _, number = id_or_name.rpartition(".")
        with self.connect() as db:
            row = db.execute(
                "SELECT * FROM workflows WHERE user_id = ? AND id = ? AND deleted = 0",
                (user.id, id_or_name),
            ).fetchone()
            if row is None and name and number.isdigit():
                row = db.execute(
                    "SELECT * FROM workflows WHERE user_id = ? AND name = ? AND run_number = ? "
                    "AND deleted = 0",
                    (user.id, name, int(number)),
                ).fetchone()
            if row is None:
                row = db.execute(
                    "SELECT * FROM workflows WHERE user_id = ? AND name = ? AND deleted = 0 "
                    "ORDER BY run_number DESC LIMIT 1",
                    (user.id, id_or_name),
                ).fetchone()
        return _workflow(row) if row else None

    def by_id(self, workflow_id: str) -> Workflow | None:
        """Whoever's it is: for the supervisor of the runs, never for a request."""
        with self.connect() as db:
            row = db.execute("SELECT * FROM workflows WHERE id = ?", (workflow_id,)).fetchone()
        return _workflow(row) if row else None

    def discard(self, workflow_id: str) -> None:
        with self.connect() as db:
            db.execute("DELETE FROM workflows WHERE id = ?", (workflow_id,))

    def update(self, workflow_id: str, **fields: Any) -> None:
        columns = ", ".join(f"{name} = ?" for name in fields)
        with self.connect() as db:
            db.execute(
                f"UPDATE workflows SET {columns} WHERE id = ?", (*fields.values(), workflow_id)
            )

    def with_status(self, *statuses: str) -> list[Workflow]:
        """Every user's workflows in these states: the supervisor's queue and its reconciling."""
        marks = ", ".join("?" * len(statuses))
        with self.connect() as db:
            rows = db.execute(
                f"SELECT * FROM workflows WHERE status IN ({marks}) AND deleted = 0 "
                "ORDER BY started, created",
                statuses,
            ).fetchall()
        return [_workflow(r) for r in rows]


def _workflow(row: sqlite3.Row) -> Workflow:
    return Workflow(
        row["id"], row["user_id"], row["name"], row["run_number"], row["status"], row["created"],
        row["started"], row["finished"], Path(row["workspace"]), row["run"], row["pid"],
        row["parameters"],
    )  # fmt: skip
