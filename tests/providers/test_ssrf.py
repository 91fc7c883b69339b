"""The SSRF guard: a corpus of blocked destinations and tricks, the allow-list, connect-to-checked-address."""

from __future__ import annotations

import ipaddress
import socket

import httpx
import pytest

from providers.ssrf import (
    Allowlist,
    BlockedDestination,
    blocked_reason,
    check_url,
    guarded_client,
    ip_literal,
    parse_ipv4_loose,
    resolve_checked,
)

BLOCKED_HOSTS = [
    "127.0.0.1",
    "127.1",
    "2130706433",  # decimal 127.0.0.1
    "0x7f.1",  # hex + short form
    "0x7f000001",
    "017700000001",  # octal
    "0177.0.0.1",
    "0",
    "0.0.0.0",  # noqa: S104
    "10.0.0.5",
    "172.16.3.4",
    "192.168.1.1",
    "100.64.0.1",  # carrier-grade NAT
    "169.254.169.254",  # AWS/GCP/Azure metadata
    "169.254.170.2",  # ECS task metadata
    "100.100.100.200",  # Alibaba metadata
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "::1",
    "[::1]",
    "::",
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",  # IPv4-compatible
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "fe80::1",
    "fe80::1%eth0",
    "fc00::1",
    "fd00:ec2::254",  # AWS IPv6 metadata
    "ff02::1",
    "metadata.google.internal",
    "METADATA.GOOGLE.INTERNAL.",
    "metadata",
]


@pytest.mark.parametrize("host", BLOCKED_HOSTS)
def test_blocked_corpus(settings, host):
    settings.SSRF_ALLOWLIST = []
    with pytest.raises(BlockedDestination, match="Destination blocked"):
        resolve_checked(host, 80)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://017700000001/",
        "http://0177.0.0.1/",
        "http://[::1]:8000/",
        "http://[::ffff:127.0.0.1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "https://user:pass@10.1.2.3/",
        "file:///etc/passwd",
        "gopher://example.com/",
        "ftp://example.com/",
    ],
)
def test_check_url_refuses_without_dns(settings, url):
    settings.SSRF_ALLOWLIST = []
    with pytest.raises(BlockedDestination):
        check_url(url)


def test_loose_ipv4_parsing_matches_inet_aton():
    for spelling in ["2130706433", "0x7f.1", "017700000001", "0177.0.0.1", "127.1", "0x7f.0.0.1", "127.0.1"]:
        assert parse_ipv4_loose(spelling) == ipaddress.IPv4Address("127.0.0.1"), spelling
        assert socket.inet_aton(spelling) == ipaddress.IPv4Address("127.0.0.1").packed, spelling
    assert parse_ipv4_loose("1.2.3.4.5") is None
    assert parse_ipv4_loose("256.1.1.1") is None
    assert parse_ipv4_loose("example.com") is None
    assert ip_literal("example.com") is None
    assert ip_literal("deadbeef.com") is None


def test_public_addresses_pass(settings):
    settings.SSRF_ALLOWLIST = []
    for host in ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "1.1.1.1"]:
        assert blocked_reason(ipaddress.ip_address(host)) is None
        assert resolve_checked(host, 443) == str(ipaddress.ip_address(host))
    check_url("https://93.184.216.34/path")


def test_hostname_resolving_to_a_private_address_is_refused(settings):
    settings.SSRF_ALLOWLIST = []
    with pytest.raises(BlockedDestination, match=r"resolves to 127\.0\.0\.1, a loopback address"):
        resolve_checked("localhost", 80)


def test_allowlist_hosts_ips_and_networks(settings):
    allow = Allowlist(["127.0.0.1", "10.0.0.0/8", "Internal.Example", "*.corp.test", " ", "[::1]"])
    assert allow.allows_ip(ipaddress.ip_address("127.0.0.1"))
    assert allow.allows_ip(ipaddress.ip_address("::ffff:127.0.0.1"))
    assert allow.allows_ip(ipaddress.ip_address("10.9.8.7"))
    assert allow.allows_ip(ipaddress.ip_address("::1"))
    assert not allow.allows_ip(ipaddress.ip_address("127.0.0.2"))
    assert not allow.allows_ip(ipaddress.ip_address("192.168.0.1"))
    assert allow.allows_host("internal.example.")
    assert allow.allows_host("api.corp.test")
    assert not allow.allows_host("corp.test.evil.com")
    broad = Allowlist(["0.0.0.0/0", "169.254.0.0/16"])
    assert broad.allows_ip(ipaddress.ip_address("10.1.1.1"))
    assert not broad.allows_ip(ipaddress.ip_address("169.254.169.254"))  # metadata needs an exact entry
    assert Allowlist(["169.254.169.254"]).allows_ip(ipaddress.ip_address("169.254.169.254"))
    settings.SSRF_ALLOWLIST = ["127.0.0.1"]
    assert resolve_checked("2130706433", 80) == "127.0.0.1"
    assert resolve_checked("localhost", 80) == "127.0.0.1"
    with pytest.raises(BlockedDestination):
        resolve_checked("169.254.169.254", 80)


def test_client_connects_to_the_checked_address_with_the_original_host(settings, http_server, monkeypatch):
    """A name is resolved exactly once; the socket goes to that address; Host header and URL keep the name."""
    settings.SSRF_ALLOWLIST = ["127.0.0.1/32"]
    real = socket.getaddrinfo
    lookups: list[str] = []

    def fake_dns(host, *args, **kwargs):
        if host == "service.test":
            lookups.append(host)
            return real("127.0.0.1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_dns)
    with guarded_client() as client:
        response = client.get(f"http://service.test:{http_server.port}/echo")
    assert response.status_code == 200
    assert response.json()["headers"]["host"] == f"service.test:{http_server.port}"
    assert lookups == ["service.test"]


def test_client_refuses_loopback_when_not_allowlisted(settings, http_server):
    settings.SSRF_ALLOWLIST = []
    with guarded_client() as client, pytest.raises(BlockedDestination):
        client.get(http_server.url("/echo"))
    with guarded_client() as client, pytest.raises(BlockedDestination, match=r"resolves to 127\.0\.0\.1"):
        client.get(http_server.url("/echo", host="localhost"))
    assert http_server.requests == []


def test_every_redirect_is_checked(settings, http_server):
    settings.SSRF_ALLOWLIST = ["127.0.0.1"]
    with guarded_client(follow_redirects=True) as client:
        ok = client.get(http_server.url("/redirect?to=/echo"))
        assert ok.status_code == 200 and ok.json()["path"] == "/echo"
        for target in ["http://169.254.169.254/latest/", "http://10.255.255.1/", "http://[::1]:1/", "http://0x0a.1/"]:
            with pytest.raises(BlockedDestination):
                client.get(http_server.url(f"/redirect?to={target}"))


def test_no_proxy_from_the_environment(settings, http_server, monkeypatch):
    """Env proxies would connect somewhere unchecked; the guarded client ignores them."""
    settings.SSRF_ALLOWLIST = ["127.0.0.1"]
    monkeypatch.setenv("HTTP_PROXY", "http://10.0.0.1:3128")
    monkeypatch.setenv("ALL_PROXY", "http://10.0.0.1:3128")
    with guarded_client(timeout=5) as client:
        assert client.get(http_server.url("/echo")).status_code == 200


def test_unresolvable_host_is_a_connect_error(settings):
    settings.SSRF_ALLOWLIST = []
    with guarded_client(timeout=5) as client, pytest.raises(httpx.ConnectError):
        client.get("http://no-such-host.invalid/")


def _self_signed(tmp_path, name: str):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_tls_keeps_sni_and_certificate_checks_on_the_name(settings, tmp_path, monkeypatch):
    """Connecting to the checked IP must not weaken TLS: SNI and hostname verification use the URL's name."""
    import ssl

    from .loopback import start_server

    cert_path, key_path = _self_signed(tmp_path, "service.test")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_path, key_path)
    seen_sni: list[str | None] = []
    server_ctx.sni_callback = lambda sock, server_name, ctx: seen_sni.append(server_name)
    server = start_server(ssl_context=server_ctx)
    settings.SSRF_ALLOWLIST = ["127.0.0.1"]
    real = socket.getaddrinfo
    monkeypatch.setattr(
        socket, "getaddrinfo", lambda host, *a, **k: real("127.0.0.1" if host == "service.test" else host, *a, **k)
    )
    trust = ssl.create_default_context(cafile=str(cert_path))
    try:
        with guarded_client(verify=trust) as client:
            response = client.get(server.url("/echo", host="service.test", scheme="https"))
            assert response.status_code == 200
            assert response.json()["headers"]["host"] == f"service.test:{server.port}"
            assert seen_sni == ["service.test"]
            # the same server reached by its IP: the certificate does not match, so TLS refuses
            with pytest.raises(httpx.ConnectError, match=r"(?i)certificate|hostname|IP address mismatch"):
                client.get(server.url("/echo", scheme="https"))
    finally:
        server.stop()


def test_every_checked_address_is_tried_in_turn(settings, http_server, monkeypatch):
    """A name with an unreachable first answer still connects, and only to addresses that were checked."""
    settings.SSRF_ALLOWLIST = ["127.0.0.1", "::1"]
    real = socket.getaddrinfo

    def two_answers(host, port, *args, **kwargs):
        if host == "dual.test":
            return real("::1", port, *args, **kwargs) + real("127.0.0.1", port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", two_answers)
    with guarded_client(timeout=5) as client:
        assert client.get(f"http://dual.test:{http_server.port}/echo").status_code == 200
    settings.SSRF_ALLOWLIST = ["127.0.0.1"]  # now ::1 is not allowed: the whole name is refused
    with guarded_client(timeout=5) as client, pytest.raises(BlockedDestination, match="loopback"):
        client.get(f"http://dual.test:{http_server.port}/echo")
