"""The fetch stage's address guard: schemes, credentials, private and special addresses."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from faceatlas.netguard import AddressGuard, RefusedError, blocked_reason, parse_target


def fake_resolver(table: dict[str, list[str]]):
    """getaddrinfo stand-in: no DNS traffic leaves the test."""

    def resolve(host, port, type=0):
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in table[host]]

    return resolve


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port", "path"),
    [
        ("http://farm1.staticflickr.com/2/3_4.jpg", "http", "farm1.staticflickr.com", 80,
         "/2/3_4.jpg"),
        ("HTTPS://Example.ORG:8443/a?b=1", "https", "example.org", 8443, "/a?b=1"),
        ("http://[2001:db8::1]/x", "http", "2001:db8::1", 80, "/x"),
        ("http://host", "http", "host", 80, "/"),
    ],
)  # fmt: skip
def test_parse_target(url, scheme, host, port, path):
    t = parse_target(url)
    assert (t.scheme, t.host, t.port, t.path) == (scheme, host, port, path)


@pytest.mark.parametrize(
    "url",
    ["ftp://host/x.jpg", "file:///etc/passwd", "gopher://h/", "javascript:alert(1)", "//h/x",
     "http://", "http://user:pw@host/x.jpg", "http://user@host/x.jpg", "http://host:99999/"],
)  # fmt: skip
def test_parse_target_refuses(url):
    with pytest.raises(RefusedError) as e:
        parse_target(url)
    assert e.value.status == "bad_url"


@pytest.mark.parametrize(
    "ip",
    ["127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "0.0.0.0",
     "224.0.0.1", "240.0.0.1", "100.64.0.1", "192.0.2.7", "::1", "fe80::1", "fc00::1",
     "ff02::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::"],
)  # fmt: skip
def test_special_addresses_are_blocked(ip):
    assert blocked_reason(ipaddress.ip_address(ip)) is not None


@pytest.mark.parametrize(
    ("ip", "reason"),
    [("127.0.0.1", "loopback"), ("169.254.169.254", "link-local"), ("10.0.0.1", "private"),
     ("224.0.0.1", "multicast"), ("::ffff:127.0.0.1", "loopback")],
)  # fmt: skip
def test_block_reasons_name_the_range(ip, reason):
    assert blocked_reason(ipaddress.ip_address(ip)) == reason


@pytest.mark.parametrize("ip", ["8.8.8.8", "151.101.1.140", "2001:4860:4860::8888"])
def test_public_addresses_pass(ip):
    assert blocked_reason(ipaddress.ip_address(ip)) is None


def test_resolved_private_address_is_refused_before_any_connection():
    guard = AddressGuard(resolver=fake_resolver({"evil.example": ["169.254.169.254"]}))
    with pytest.raises(RefusedError) as e:
        guard.addresses(parse_target("http://evil.example/latest/meta-data/"))
    assert e.value.status == "blocked_address"
    assert "169.254.169.254" in e.value.detail


def test_mixed_public_and_private_answers_are_refused():
    guard = AddressGuard(resolver=fake_resolver({"rebind.example": ["8.8.8.8", "10.0.0.1"]}))
    with pytest.raises(RefusedError, match="blocked_address"):
        guard.addresses(parse_target("http://rebind.example/x.jpg"))


def test_public_answer_is_returned():
    guard = AddressGuard(resolver=fake_resolver({"photos.example": ["8.8.4.4", "8.8.8.8"]}))
    assert guard.addresses(parse_target("https://photos.example/a.jpg")) == ["8.8.4.4", "8.8.8.8"]


def test_ip_literals_need_no_dns_and_are_checked():
    guard = AddressGuard(resolver=fake_resolver({}))
    with pytest.raises(RefusedError, match="blocked_address"):
        guard.addresses(parse_target("http://10.0.0.1/x.jpg"))
    with pytest.raises(RefusedError, match="blocked_address"):
        guard.addresses(parse_target("http://[::1]:8080/x.jpg"))
    assert guard.addresses(parse_target("http://8.8.8.8/x.jpg")) == ["8.8.8.8"]


def test_unknown_host_is_a_dns_error():
    guard = AddressGuard(resolver=fake_resolver({}))
    with pytest.raises(RefusedError) as e:
        guard.addresses(parse_target("http://nowhere.invalid/x.jpg"))
    assert e.value.status == "dns_error"


@pytest.mark.parametrize(
    ("allow", "url", "allowed"),
    [
        (["127.0.0.1"], "http://127.0.0.1:8000/a.jpg", True),
        (["127.0.0.1:8000"], "http://127.0.0.1:8000/a.jpg", True),
        (["127.0.0.1:8001"], "http://127.0.0.1:8000/a.jpg", False),
        (["LOCALHOST"], "http://localhost/a.jpg", True),
        (["[::1]"], "http://[::1]/a.jpg", True),
        (["[::1]:9000"], "http://[::1]:9000/a.jpg", True),
        (["example.org"], "http://127.0.0.1/a.jpg", False),
    ],
)  # fmt: skip
def test_allow_list_opens_exact_exceptions(allow, url, allowed):
    guard = AddressGuard(allow, resolver=fake_resolver({"localhost": ["127.0.0.1"]}))
    target = parse_target(url)
    if allowed:
        assert guard.addresses(target)
    else:
        with pytest.raises(RefusedError, match="blocked_address"):
            guard.addresses(target)
