"""Who is calling, and what they may do: client keys by role, the agent enrollment token, worker tokens."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from enum import StrEnum

from starlette.requests import Request

from coordinator.compat import Profile
from coordinator.config import Settings
from coordinator.errors import Forbidden, Unauthorized
from coordinator.workers import WorkerService


class Access(StrEnum):
    """What a route requires."""

    PUBLIC = "public"
    READ = "read"  # any client key
    SUBMIT = "submit"  # submit or operator key
    OPERATOR = "operator"
    AGENT = "agent"  # the enrollment token (or an operator key)
    WORKER = "worker"  # the token of the worker named in the path
    WORKER_OR_OPERATOR = "worker_or_operator"
    WORKER_OR_READ = "worker_or_read"


CLIENT_RANK = {"read": 1, "submit": 2, "operator": 3}
NEEDED_RANK = {Access.READ: 1, Access.SUBMIT: 2, Access.OPERATOR: 3}


@dataclass(frozen=True)
class Caller:
    """The authenticated caller: a client key's name and role, or a worker."""

    name: str
    role: str
    worker_id: uuid.UUID | None = None
    profile: Profile = Profile.AIDD
    """Whose status words the caller's answers use (its key's profile)."""


def bearer(request: Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class Authenticator:
    """Checks a request against the route's access level (keys compared in constant time)."""

    def __init__(self, settings: Settings, workers: WorkerService) -> None:
        self.settings, self.workers = settings, workers
        self.keyless = not settings.api_keys

    def client(self, token: str | None) -> Caller | None:
        """The client key this token is, if any (keyless mode: everyone is the local operator)."""
        if self.keyless:
            return Caller("local", "operator")
        if token is None:
            return None
        for key in self.settings.api_keys:
            if secrets.compare_digest(key.key.encode(), token.encode()):
                return Caller(key.name, key.role, profile=Profile(key.profile))
        return None

    async def check(self, request: Request, access: Access) -> Caller:
        """The caller, or Unauthorized (no/unknown credential) / Forbidden (known but not allowed)."""
        if access == Access.PUBLIC:
            return Caller("anonymous", "public")
        token = bearer(request)
        if access in (Access.WORKER, Access.WORKER_OR_OPERATOR, Access.WORKER_OR_READ):
            worker_id = request.path_params["worker_id"]  # a UUID, or a prefix an operator gave (never a worker)
            own = isinstance(worker_id, uuid.UUID) and token is not None
            if own and await self.workers.verify_token(worker_id, token or ""):
                return Caller(f"worker:{worker_id}", "worker", worker_id)
            if access == Access.WORKER:
                raise Unauthorized("this route needs the worker's own token")
            access = Access.OPERATOR if access == Access.WORKER_OR_OPERATOR else Access.READ
        if access == Access.AGENT:
            expected = self.settings.agent_token
            if expected is None and self.keyless:
                return Caller("agent", "agent")
            if expected is not None and token is not None and secrets.compare_digest(expected.encode(), token.encode()):
                return Caller("agent", "agent")
            access = Access.OPERATOR
        caller = self.client(token)
        if caller is None:
            raise Unauthorized("missing or unknown API key (send Authorization: Bearer <key>)")
        if CLIENT_RANK[caller.role] < NEEDED_RANK[access]:
            raise Forbidden(f"key {caller.name!r} ({caller.role}) may not do this; it needs {access.value}")
        return caller
