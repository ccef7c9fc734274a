"""The daemon serves with the shipped mbxmpp.example.toml (generated from the option declarations),
changed only where it names this machine: ports, directories and certificate files."""

from __future__ import annotations

import re
from pathlib import Path

from tests.daemon import Daemon, free_ports
from tests.rawclient import RawClient

EXAMPLE = Path(__file__).resolve().parents[2] / "mbxmpp.example.toml"


def set_key(text: str, section: str, key: str, value: str | None) -> str:
    """`key = value` in [section] (None: the line removed); the key must be in the example."""
    head = f"\n[{section}]"
    start = text.index(head) + len(head)
    end = text.find("\n[", start)
    body = text[start:end]
    line = re.compile(rf"^{re.escape(key)} = .*$", re.M)
    assert line.search(body), f"{section}.{key} not in the example"
    body = line.sub("" if value is None else f"{key} = {value}", body, count=1)
    return text[:start] + body + text[end:]


async def test_daemon_serves_with_the_example_config():
    d = Daemon()
    s2s_tls, http2 = free_ports(2)
    text = EXAMPLE.read_text()
    for section, key, value in [
        ("server", "data_dir", f'"{d.dir}/data"'),
        ("tls", "cert", None), ("tls", "key", None), ("tls", "certificates_dir", None),
        ("c2s", "listen", f'["127.0.0.1:{d.c2s}"]'), ("c2s", "direct_tls", f'["127.0.0.1:{d.tls}"]'),
        ("s2s", "listen", f'["127.0.0.1:{d.s2s}"]'), ("s2s", "direct_tls", f'["127.0.0.1:{s2s_tls}"]'),
        ("s2s", "ca_file", None),
        ("http", "listen", f'["127.0.0.1:{d.http}"]'), ("http", "public_url", f'"https://example.org:{http2}"'),
        ("upload", "storage_dir", f'"{d.dir}/upload"'),
        ("proxy65", "listen", f'["127.0.0.1:{d.proxy}"]'),
        ("webchat", "assets_dir", f'"{d.dir}/webchat"'),
    ]:
        text = set_key(text, section, key, value)
    text = re.sub(r'\n\[tls\.domains\."customer-domain\.example"\]\n.*\n.*\n', "\n", text)  # its files
    Path(d.config_path).write_text(text)
    assert d.cli("check-config").returncode == 0
    d.add_user("alice@example.org", "secret")
    d.start()
    try:
        c = await RawClient.connect(d.c2s)
        jid = await c.login("alice", "secret", to="example.org")
        assert jid.startswith("alice@example.org/")
        await c.send("<iq type='get' id='d1' to='example.org'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
        items = await c.element()
        assert {i.get("jid") for i in items.first_child().elements()} >= {
            "conference.example.org", "upload.example.org", "proxy.example.org"}
        await c.close()
    finally:
        d.finish()
