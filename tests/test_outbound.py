"""The outbound allow-list: user-supplied endpoints may not reach loopback, private or link-local addresses."""

from __future__ import annotations

import httpx
import pytest

from openft.outbound import OutboundRefused, check_url, guarded_http_client


def resolver(table: dict[str, list[str]]):
    def resolve(host: str, _port: int) -> list[str]:
        if host not in table:
            raise OSError(-2, "Name or service not known")
        return table[host]

    return resolve


PUBLIC = resolver({"api.openai.com": ["162.159.140.245"], "rebind.test": ["93.184.216.34", "127.0.0.1"],
                   "metadata.test": ["169.254.169.254"], "lan.test": ["192.168.1.20"], "v6.test": ["::1"],
                   "mapped.test": ["::ffff:10.0.0.1"], "cgnat.test": ["100.64.0.1"]})


def test_public_hosts_pass():
    check_url("https://api.openai.com/v1", (), resolve=PUBLIC)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1:8000/v1", "loopback"),
        ("http://localhost/v1", "loopback"),  # resolved for real: every machine maps it to loopback
        ("http://[::1]/v1", "loopback"),
        ("http://v6.test/v1", "loopback"),
        ("http://metadata.test/latest", "link-local"),
        ("http://169.254.169.254/latest", "link-local"),
        ("http://lan.test/v1", "private"),
        ("http://10.1.2.3/v1", "private"),
        ("http://mapped.test/v1", "private"),
        ("http://rebind.test/v1", "loopback"),  # one bad address among good ones is enough to refuse
        ("http://0.0.0.0:8000/v1", "unspecified"),
        ("http://2130706433/v1", "loopback"),  # 127.0.0.1 written as one number
        ("http://cgnat.test/v1", "non-public"),
    ],
)
def test_non_public_addresses_are_refused(url, kind):
    resolve = PUBLIC if ".test" in url else None
    with pytest.raises(OutboundRefused, match=f" {kind} address.*OPENFT_OUTBOUND_ALLOW"):
        check_url(url, (), resolve=resolve)


@pytest.mark.parametrize("url", ["ftp://api.openai.com/", "file:///etc/passwd", "http:///nohost", "http://x:99999/"])
def test_other_schemes_and_broken_urls_are_refused(url):
    with pytest.raises(OutboundRefused):
        check_url(url, (), resolve=PUBLIC)


def test_unresolvable_hosts_are_refused():
    with pytest.raises(OutboundRefused, match="cannot be resolved"):
        check_url("https://nowhere.test/v1", (), resolve=PUBLIC)


def test_the_operator_can_allow_hosts_addresses_and_ranges():
    check_url("http://127.0.0.1:8000/v1", ("127.0.0.1",))
    check_url("http://lan.test/v1", ("192.168.0.0/16",), resolve=PUBLIC)
    check_url("http://vllm.internal:8000/v1", ("vllm.internal",))  # allowed by name: not even resolved
    check_url("http://10.9.9.9/v1", ("*",))
    with pytest.raises(OutboundRefused):
        check_url("http://10.9.9.9/v1", ("192.168.0.0/16",))


def test_the_allow_list_comes_from_the_environment(monkeypatch):
    from openft.config import reset_settings

    monkeypatch.setenv("OPENFT_OUTBOUND_ALLOW", "localhost, 127.0.0.0/8")
    reset_settings()
    try:
        check_url("http://127.0.0.1:9/v1")
    finally:
        monkeypatch.delenv("OPENFT_OUTBOUND_ALLOW")
        reset_settings()
    with pytest.raises(OutboundRefused):
        check_url("http://127.0.0.1:9/v1")


def test_the_guarded_client_checks_each_request_and_follows_no_redirect():
    with guarded_http_client(()) as client:
        with pytest.raises(httpx.ConnectError, match="refused to connect"):
            client.get("http://127.0.0.1:9/v1/models")
        assert client.follow_redirects is False
