"""The web chat at /chat over real HTTPS: Converse.js from the pinned, integrity-checked
release, per-host configuration, the security headers, and the page shown without the files."""

from __future__ import annotations

import io
import os
import tarfile

import aiohttp
import pytest

from mbxmpp.modules.webchat import assets
from tests.daemon import Daemon
from tests.rawclient import client_ssl
from tests.webchat_assets import converse_tarball



@pytest.fixture(scope="module")
def daemon():
    d = Daemon(domains=("localhost", "example.test"), extra='[webchat]\nlanguage = "de"\n')
    d.cli("webchat", "fetch", "--tarball", converse_tarball())
    d.start()
    yield d
    d.finish()


@pytest.fixture(scope="module")
def bare_daemon():
    d = Daemon()
    d.start()
    yield d
    d.finish()


async def _get(port: int, path: str, host: str = "localhost") -> tuple[int, dict, bytes]:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"https://127.0.0.1:{port}{path}", ssl=client_ssl(), headers={"Host": host},
                         allow_redirects=False) as r:
            return r.status, dict(r.headers), await r.read()


async def test_page_scripts_and_headers(daemon):
    status, headers, body = await _get(daemon.http, "/chat/")
    assert status == 200 and b'src="/chat/dist/converse.min.js"' in body and b'lang="de"' in body
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self' 'wasm-unsafe-eval'" in csp
    assert "'unsafe-eval'" not in csp.replace("'wasm-unsafe-eval'", "") and "frame-ancestors 'none'" in csp
    assert "https:" not in csp.replace("wss:", "")  # nothing from other origins
    assert headers["X-Frame-Options"] == "DENY" and headers["X-Content-Type-Options"] == "nosniff"
    assert "Set-Cookie" not in headers
    status, headers, _ = await _get(daemon.http, "/chat")
    assert status == 301 and headers["Location"] == "/chat/"
    status, headers, body = await _get(daemon.http, "/chat/dist/converse.min.js")
    assert status == 200 and len(body) > 100_000 and "javascript" in headers["Content-Type"]
    status, _, _ = await _get(daemon.http, "/chat/dist/libomemo.esm.min.js")  # OMEMO in the browser
    assert status == 200


async def test_configuration_per_host(daemon):
    _, _, body = await _get(daemon.http, "/chat/config.js", host=f"example.test:{daemon.http}")
    text = body.decode()
    assert f'"websocket_url": "wss://example.test:{daemon.http}/xmpp-websocket"' in text
    assert f'"bosh_service_url": "https://example.test:{daemon.http}/http-bind"' in text
    assert '"default_domain": "example.test"' in text and '"i18n": "de"' in text
    _, _, body = await _get(daemon.http, "/chat/config.js", host=f"localhost:{daemon.http}")
    assert '"default_domain": "localhost"' in body.decode()
    # A name we do not serve gets the first domain, never the name it sent.
    _, _, body = await _get(daemon.http, "/chat/config.js", host="evil.example")
    assert '"default_domain": "localhost"' in body.decode()


@pytest.mark.parametrize("path", ["/chat/dist/../../mbxmpp.toml", "/chat/dist/%2e%2e/%2e%2e/mbxmpp.toml",
                                  "/chat/dist/..%2f..%2fmbxmpp.toml", "/chat/dist/.integrity",
                                  "/chat/dist/no-such-file.js", "/chat/dist/%00"])
async def test_no_way_out_of_the_assets(daemon, path):
    status, _, body = await _get(daemon.http, path)
    assert status in (400, 404) and b"[server]" not in body


async def test_without_the_files_a_page_says_how_to_install_them(bare_daemon):
    status, headers, body = await _get(bare_daemon.http, "/chat/")
    assert status == 503 and b"python -m mbxmpp webchat fetch" in body
    assert "Content-Security-Policy" in headers
    out = bare_daemon.cli("check-config").stdout
    assert "python -m mbxmpp webchat fetch" in out


def test_a_tarball_with_another_hash_is_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"alert(1)"
        info = tarfile.TarInfo("package/dist/converse.min.js")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    fake = tmp_path / "converse.js-14.0.0.tgz"
    fake.write_bytes(buf.getvalue())
    with pytest.raises(assets.AssetsError, match="integrity mismatch"):
        assets.fetch(str(tmp_path / "assets"), str(fake))
    assert not assets.installed(str(tmp_path / "assets"))
    assert not os.path.exists(assets.release_dir(str(tmp_path / "assets")))
