"""Password hashing, the password file, ACL parsing and filter geometry, rate limits."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.security.conftest import FAST_N
from tidelog.security.acl import ACL, Grant, Policy, Principal, Right, covers, overlaps, parse_acl
from tidelog.security.auth import load_security
from tidelog.security.config import SecurityConfig, check_startup, is_loopback
from tidelog.security.errors import SecurityConfigError
from tidelog.security.passwords import (
    Credentials,
    PasswordFile,
    check_password,
    hash_password,
    new_token,
)
from tidelog.security.ratelimit import ConnectionLimiter, FailureLimiter
from tidelog.server import ServerConfig
from tidelog.topics import topic_matches


def test_scrypt_hashes_are_salted_and_carry_their_parameters() -> None:
    first, second = hash_password("pw", n=2**10), hash_password("pw", n=2**10)
    assert first != second and first.startswith("$scrypt$n=1024,r=8,p=1$")
    assert check_password("pw", first) and check_password("pw", second)
    assert not check_password("pW", first)
    assert not check_password("pw", "$scrypt$n=1024,r=8,p=1$bad$hash")
    assert not check_password("pw", "$scrypt$n=99999999,r=8,p=1$AAAA$AAAA")  # cost capped


def test_password_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "users"
    passwords = PasswordFile()
    passwords.set_password("alice", hash_password("a", n=2**10))
    token = new_token()
    passwords.add_token("alice", token)
    passwords.set_password("alice", hash_password("b", n=2**10))  # keeps the token
    passwords.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = PasswordFile.load(path)
    assert loaded.users() == ["alice"] and len(loaded.entries) == 2
    credentials = Credentials.from_entries(loaded.entries)
    assert check_password("b", credentials.password_hash("alice") or "")
    assert credentials.token_user(token) == "alice"
    assert credentials.token_user(new_token()) is None
    assert token not in path.read_text()
    path.write_text("alice:plaintext\n")
    with pytest.raises(SecurityConfigError, match=":1:"):
        PasswordFile.load(path)
    with pytest.raises(SecurityConfigError):
        PasswordFile().set_password("a:b", "$scrypt$x")


@pytest.mark.parametrize(
    ("pattern", "topic_filter", "covered"),
    [
        ("a/#", "a/b/c", True),
        ("a/#", "a", True),
        ("a/#", "a/+/c", True),
        ("a/#", "a/#", True),
        ("a/+", "a/b", True),
        ("a/+", "a/+", True),
        ("a/+", "a/#", False),
        ("a/+", "a/b/c", False),
        ("a/b", "a/+", False),
        ("#", "a/#", True),
        ("#", "#", True),
        ("#", "$SYS/#", False),
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/broker/+", True),
        ("a/b/#", "a/#", False),
    ],
)
def test_covers(pattern: str, topic_filter: str, covered: bool) -> None:
    assert covers(pattern, topic_filter) is covered


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("a/#", "a/secret/#", True),
        ("a/+", "a/b", True),
        ("a/+", "b/+", False),
        ("a/b/#", "a/b", True),
        ("a/+/c", "a/b/d", False),
        ("#", "$SYS/x", False),
        ("+/+", "a", False),
    ],
)
def test_overlaps(a: str, b: str, overlap: bool) -> None:
    assert overlaps(a, b) is overlap and overlaps(b, a) is overlap


levels = st.sampled_from(["a", "b", "$SYS", "+", "#"])
names = st.sampled_from(["a", "b", "$SYS", "c"])


def _filters() -> st.SearchStrategy[str]:
    def valid(parts: list[str]) -> bool:
        return all(p != "#" for p in parts[:-1])

    return st.lists(levels, min_size=1, max_size=4).filter(valid).map("/".join)


@given(_filters(), _filters(), st.lists(names, min_size=1, max_size=5).map("/".join))
def test_covers_and_overlaps_agree_with_matching(pattern: str, flt: str, topic: str) -> None:
    """If the pattern covers the filter, every topic the filter matches is matched by
    the pattern; a topic matched by both means they overlap."""
    if covers(pattern, flt) and topic_matches(flt, topic):
        assert topic_matches(pattern, topic)
    if topic_matches(flt, topic) and topic_matches(pattern, topic):
        assert overlaps(pattern, flt)


def test_acl_rules_sections_and_substitution() -> None:
    acl = ACL(
        parse_acl(
            "allow subscribe public/#\n"
            "user alice\nallow all alice/#\ndeny read alice/private/#\n"
            "anonymous\nallow publish anon/#\n"
            "all\nallow publish devices/%c/#\nallow subscribe users/%u/#\n"
        )
    )
    alice = Principal("alice", "c1")
    anon = Principal(None, "c2")
    assert acl.allows(alice, Right.PUBLISH, "alice/x")
    assert acl.allows(alice, Right.SUBSCRIBE, "public/x")
    assert not acl.allows(alice, Right.READ, "alice/private/x")
    assert acl.allows(alice, Right.PUBLISH, "devices/c1/t")
    assert not acl.allows(alice, Right.PUBLISH, "devices/c2/t")
    assert acl.allows(anon, Right.PUBLISH, "anon/x")
    assert not acl.allows(alice, Right.PUBLISH, "anon/x")
    assert acl.allows(alice, Right.SUBSCRIBE, "users/alice/x")
    assert not acl.allows(anon, Right.SUBSCRIBE, "users/alice/x")  # %u needs a user
    # unsafe substitution: the allow rule does not apply
    assert not acl.allows(Principal("bob", "#"), Right.PUBLISH, "devices/x/t")
    assert acl.grant(alice, Right.READ, "alice/#") is Grant.PER_TOPIC
    assert acl.grant(alice, Right.SUBSCRIBE, "alice/#") is Grant.FULL
    assert acl.grant(alice, Right.READ, "alice/private/#") is Grant.DENIED
    assert acl.grant(alice, Right.SUBSCRIBE, "#") is Grant.DENIED
    assert acl.grant(anon, Right.SUBSCRIBE, "public/+/x") is Grant.FULL


def test_sys_is_for_sys_users_only() -> None:
    open_policy = Policy(["admin"])
    assert open_policy.grant(Principal("admin"), Right.SUBSCRIBE, "$SYS/#") is Grant.FULL
    assert open_policy.grant(Principal("bob"), Right.SUBSCRIBE, "$SYS/#") is Grant.DENIED
    assert not open_policy.allows(Principal(None), Right.READ, "$SYS/x")
    assert open_policy.allows(Principal(None), Right.SUBSCRIBE, "$other/x")
    acl = ACL(parse_acl("allow all #"), ["admin"])
    assert acl.grant(Principal("admin"), Right.SUBSCRIBE, "$SYS/#") is Grant.FULL
    assert acl.grant(Principal("bob"), Right.SUBSCRIBE, "$SYS/#") is Grant.DENIED
    assert not acl.allows(Principal("bob"), Right.PUBLISH, "$SYS/x")


@pytest.mark.parametrize(
    "text",
    ["allow everything a/#", "allow publish a/#/b", "user", "permit all a", "allow all"],
)
def test_bad_acl_lines_are_named(text: str) -> None:
    with pytest.raises(SecurityConfigError, match=":1:"):
        parse_acl(text)


def test_failure_limiter_window() -> None:
    now = [0.0]
    limiter = FailureLimiter(3, 10.0, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.retry_after("k") == 0
        limiter.failed("k")
    assert limiter.retry_after("k") == pytest.approx(10.0)
    now[0] = 5.0
    assert limiter.retry_after("k") == pytest.approx(5.0)
    assert limiter.retry_after("other") == 0
    now[0] = 10.5
    assert limiter.retry_after("k") == 0
    limiter.failed("k")
    limiter.forgive("k")


def test_connection_limiter() -> None:
    limiter = ConnectionLimiter(3, 2)
    assert limiter.acquire("a") is None and limiter.acquire("a") is None
    assert "a holds" in (limiter.acquire("a") or "")
    assert limiter.acquire("b") is None
    assert "maximum of 3" in (limiter.acquire("c") or "")
    limiter.release("a")
    assert limiter.acquire("c") is None


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("192.168.1.4", False), ("example.org", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_startup_refuses_non_loopback_without_authentication() -> None:
    with pytest.raises(SecurityConfigError, match=r"refusing to listen on 0\.0\.0\.0"):
        check_startup(ServerConfig(bind="0.0.0.0"))
    check_startup(ServerConfig(bind="0.0.0.0", security=SecurityConfig(allow_anonymous=True)))
    check_startup(ServerConfig(bind="0.0.0.0", security=SecurityConfig(password_file="users")))
    check_startup(ServerConfig(bind="127.0.0.2"))
    with pytest.raises(SecurityConfigError, match="nobody could connect"):
        check_startup(ServerConfig(security=SecurityConfig(allow_anonymous=False)))
    with pytest.raises(SecurityConfigError, match="tls_cert"):
        check_startup(ServerConfig(security=SecurityConfig(http_tls=True)))


@pytest.mark.parametrize(
    ("bind", "security", "open_to_anonymous"),
    [
        ("127.0.0.1", SecurityConfig(), True),
        ("::1", SecurityConfig(), True),
        ("127.0.0.1", SecurityConfig(sys_users=["ops"]), False),
        ("127.0.0.1", SecurityConfig(allow_anonymous=False, password_file="users"), False),
        ("0.0.0.0", SecurityConfig(allow_anonymous=True), False),
        ("192.0.2.7", SecurityConfig(allow_anonymous=True), False),
    ],
)
def test_sys_is_open_only_on_a_loopback_anonymous_server(
    tmp_path: Path, bind: str, security: SecurityConfig, open_to_anonymous: bool
) -> None:
    if security.password_file:
        users = PasswordFile()
        users.set_password("ops", hash_password("pw", n=FAST_N))
        users.save(tmp_path / "users")
        security.password_file = str(tmp_path / "users")
    policy = load_security(ServerConfig(bind=bind, security=security)).policy
    for principal in (Principal(None), Principal("someone")):
        granted = policy.grant(principal, Right.SUBSCRIBE, "$SYS/#") is Grant.FULL
        assert granted is open_to_anonymous
        assert policy.allows(principal, Right.READ, "$SYS/broker/load") is open_to_anonymous
