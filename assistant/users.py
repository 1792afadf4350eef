"""The portal's local accounts: a name, an argon2id password hash and groups per user, in one YAML file.

    users:
      ana: {password_hash: "$argon2id$...", groups: [staff]}

With ASSISTANT_AUTH=oidc the identity provider signs users in instead and this file is not read.
"""

from collections.abc import Iterable
from pathlib import Path

import yaml
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from assistant.files import exclusive_lock, write_private
from assistant.types import User
from retrieval import InvalidGroupName, validate_groups

MIN_PASSWORD_LENGTH = 8


class UserStoreError(ValueError):
    pass


class UserStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        # argon2-cffi's defaults are argon2id with RFC 9106's low-memory parameters; a later release that raises
        # them makes check_needs_rehash true, and authenticate() then upgrades each hash at its user's next sign-in.
        self._hasher = PasswordHasher()
        self._dummy_hash: str | None = None

    # --- changes ---------------------------------------------------------------------------

    def add(self, name: str, password: str, groups: Iterable[str]) -> None:
        """Adds the user, or replaces an existing user's password and groups."""
        _check_name(name)
        if len(password) < MIN_PASSWORD_LENGTH:
            raise UserStoreError(f"the password must be at least {MIN_PASSWORD_LENGTH} characters long")
        try:
            groups = validate_groups(groups)
        except InvalidGroupName as exc:
            raise UserStoreError(str(exc)) from None
        password_hash = self._hasher.hash(password)
        with self._locked():
            users = self._load()
            users[name] = {"password_hash": password_hash, "groups": list(groups)}
            self._save(users)

    def remove(self, name: str) -> None:
        with self._locked():
            users = self._load()
            if name not in users:
                raise UserStoreError(f"no user {name!r} in {self.path}: `assistant users list` lists them")
            del users[name]
            self._save(users)

    # --- reading ---------------------------------------------------------------------------

    def users(self) -> list[User]:
        return [User(name, tuple(entry["groups"])) for name, entry in sorted(self._load().items())]

    def authenticate(self, name: str, password: str) -> User | None:
        """The user when the password is theirs; None for a wrong password or an unknown name."""
        entry = self._load().get(name)
        if entry is None:
            # As slow as a real check, so the time a sign-in takes does not tell who has an account.
            self._verify(self._dummy(), password)
            return None
        password_hash = entry["password_hash"]
        try:
            if not self._verify(password_hash, password):
                return None
        except InvalidHashError:
            raise UserStoreError(
                f"the password hash of {name!r} in {self.path} is not an argon2 hash: set a new password with "
                f"`assistant users add {name} --group ...`"
            ) from None
        if self._hasher.check_needs_rehash(password_hash):
            self._rehash(name, password_hash, password)
        return User(name, tuple(entry["groups"]))

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except VerificationError:  # a wrong password (VerifyMismatchError) or one argon2 cannot check
            return False

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash("not anyone's password")
        return self._dummy_hash

    def _rehash(self, name: str, old_hash: str, password: str) -> None:
        new_hash = self._hasher.hash(password)
        with self._locked():
            users = self._load()
            # Only if nobody changed the password meanwhile (`assistant users add` from another process).
            if name in users and users[name]["password_hash"] == old_hash:
                users[name]["password_hash"] = new_hash
                self._save(users)

    # --- the file --------------------------------------------------------------------------

    def _locked(self):
        # Read-modify-write under an exclusive lock: the portal (rehashing) and `assistant users add` may both
        # write, and neither may drop the other's change. Readers need no lock: writes replace the file whole.
        return exclusive_lock(self.path)

    def _load(self) -> dict[str, dict]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        fix = "fix it, or move it away and add the users again with `assistant users add`"
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}: {getattr(exc, 'problem', exc)}" if mark else str(exc)
            raise UserStoreError(f"the users file {self.path} is not valid YAML ({where}): {fix}") from None
        if data is None:  # an empty file
            return {}
        users = data.get("users", "missing") if isinstance(data, dict) else data
        if users is None:  # `users:` with no one under it
            return {}
        if not isinstance(users, dict):
            raise UserStoreError(f"the users file {self.path} does not hold a 'users:' mapping: {fix}")
        for name, entry in users.items():
            if (
                not isinstance(name, str)
                or not isinstance(entry, dict)
                or not isinstance(entry.get("password_hash"), str)
                or not isinstance(entry.get("groups"), list)
            ):
                raise UserStoreError(
                    f"the users file {self.path} has a malformed entry {name!r} (each user needs password_hash and "
                    f"a list of groups): {fix}"
                )
            try:
                validate_groups(entry["groups"])
            except InvalidGroupName as exc:
                raise UserStoreError(f"the users file {self.path}, user {name!r}: {exc}: {fix}") from None
        return users

    def _save(self, users: dict[str, dict]) -> None:
        text = yaml.safe_dump({"users": dict(sorted(users.items()))}, sort_keys=False, default_flow_style=False)
        # 0600: the hashes are still worth guarding from other local accounts.
        write_private(self.path, text)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or any(character.isspace() for character in name):
        raise UserStoreError(f"invalid user name {name!r}: use a non-empty name without spaces")


def user_from_claims(claims: dict) -> tuple[User, list[str]]:
    """The user an OpenID Connect identity token names, and the groups in it that were left out.

    Who they are is the issuer and the subject (`iss`, `sub`): OIDC promises that pair never changes and never goes
    to anyone else, while an e-mail address or display name may be reassigned, edited by the user at some
    providers, or shared by two providers. The name shown is the first of email, preferred_username, name, sub. The
    groups come from the `groups` claim; a group the store could not hold (an LDAP DN, say) is left out rather than
    refusing the user altogether.
    """
    issuer, subject = claims.get("iss"), claims.get("sub")
    if not issuer or not subject:
        raise ValueError(
            "the identity token has no issuer (iss) or subject (sub): the identity provider must send both"
        )
    name = claims.get("email") or claims.get("preferred_username") or claims.get("name") or subject
    raw = claims.get("groups") or []
    if isinstance(raw, str):  # some providers send a single group as a string
        raw = [raw]
    groups = [group for group in raw if _is_group_name(group)]
    user = User(str(name), tuple(groups), id=f"oidc:{issuer}#{subject}")
    return user, sorted(set(map(str, raw)) - set(groups))


def _is_group_name(group) -> bool:
    try:
        validate_groups([group])
    except ValueError:  # InvalidGroupName
        return False
    return True
