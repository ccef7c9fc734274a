"""The pieces of the upload module that need no daemon: the chunked AES-GCM format (reordered,
truncated or edited chunks fail), file names, and Range parsing."""

from __future__ import annotations

import os

import pytest

from mbxmpp.modules.upload import crypto
from mbxmpp.modules.upload.http import parse_range
from mbxmpp.modules.upload.names import is_media_type, sanitize_filename

SLOT = "AAAAAAAAAAAAAAAAAAAAAA"


def seal_all(secret: bytes, data: bytes) -> list[bytes]:
    c = crypto.FileCipher(secret, SLOT, len(data))
    return [c.seal(i, data[i * crypto.CHUNK:(i + 1) * crypto.CHUNK]) for i in range(c.count)]


def test_round_trip_and_sizes():
    secret = os.urandom(32)
    for size in (0, 1, crypto.CHUNK - 1, crypto.CHUNK, crypto.CHUNK + 1, 3 * crypto.CHUNK):
        data = os.urandom(size)
        sealed = seal_all(secret, data)
        assert sum(map(len, sealed)) == crypto.sealed_size(size)
        c = crypto.FileCipher(secret, SLOT, size)
        assert b"".join(c.open(i, s) for i, s in enumerate(sealed)) == data


def test_reordered_truncated_or_resized_chunks_fail():
    secret = os.urandom(32)
    data = os.urandom(3 * crypto.CHUNK)
    sealed = seal_all(secret, data)
    c = crypto.FileCipher(secret, SLOT, len(data))
    with pytest.raises(crypto.InvalidTag):
        c.open(0, sealed[1])                      # swapped
    # Cut after two chunks and claim a two-chunk file: chunk 1 was not sealed as the last one.
    short = crypto.FileCipher(secret, SLOT, 2 * crypto.CHUNK)
    with pytest.raises(crypto.InvalidTag):
        short.open(1, sealed[1])
    with pytest.raises(crypto.InvalidTag):         # the size is authenticated too
        crypto.FileCipher(secret, SLOT, len(data) + 1).open(0, sealed[0])
    with pytest.raises(crypto.InvalidTag):         # another slot's key
        crypto.FileCipher(secret, "B" * 22, len(data)).open(0, sealed[0])
    flipped = bytearray(sealed[2])
    flipped[5] ^= 1
    with pytest.raises(crypto.InvalidTag):
        c.open(2, bytes(flipped))
    meta = c.seal_meta({"name": "a.png", "type": "image/png"})
    assert c.open_meta(meta) == {"name": "a.png", "type": "image/png"}
    with pytest.raises(crypto.InvalidTag):         # metadata is not a chunk, nor the reverse
        c.open(0, meta)


def test_verifier_tells_the_secret_without_revealing_the_key():
    secret = os.urandom(32)
    v = crypto.verifier(secret, SLOT)
    assert crypto.check_verifier(secret, SLOT, v)
    assert not crypto.check_verifier(os.urandom(32), SLOT, v)
    assert not crypto.check_verifier(secret, "B" * 22, v)


@pytest.mark.parametrize("name, safe", [
    ("photo.jpg", "photo.jpg"), ("../../etc/passwd", "passwd"), ("..\\..\\boot.ini", "boot.ini"),
    ("..", "file"), (".htaccess", "htaccess"), ("a b\tc\nd.txt", "a_bcd.txt"), ("très cool.jpg", "très_cool.jpg"),
    ("x" * 300 + ".png", "x" * 124 + ".png"), ("a\u202egnp.exe", "agnp.exe"), ("", "file"),
    ('q"uote<>.html', "q_uote_.html"),
])
def test_sanitize_filename(name, safe):
    assert sanitize_filename(name) == safe


def test_media_types():
    assert is_media_type("image/png") and is_media_type("application/vnd.oasis.opendocument.text")
    assert not is_media_type("image") and not is_media_type("text/html\r\nX: y") and not is_media_type("a/b/c")


@pytest.mark.parametrize("header, result", [
    (None, None), ("bytes=0-9", (0, 9)), ("bytes=5-", (5, 99)), ("bytes=-10", (90, 99)),
    ("bytes=-1000", (0, 99)), ("bytes=90-1000", (90, 99)), ("bytes=100-", False), ("bytes=-0", False),
    ("bytes=9-5", None), ("bytes=0-1,5-6", None), ("items=0-5", None), ("bytes=-", None),
])
def test_parse_range(header, result):
    assert parse_range(header, 100) == result


def test_config_keys_of_upload_and_proxy65(tmp_path):
    from mbxmpp.config import ConfigError, load_config

    path = tmp_path / "c.toml"
    path.write_text('[server]\ndomains = ["example.org"]\n'
                    '[upload]\nquota_per_user = "50MiB"\nslots_per_hour = 7\n'
                    '[proxy65]\nactivation_timeout = "10s"\nidle_timeout = "2m"\nmax_streams_per_user = 3\n'
                    'max_bytes_per_user = "1GiB"\n')
    cfg = load_config(str(path))
    assert (cfg.upload.quota_per_user, cfg.upload.slots_per_hour) == (50 * 1024 * 1024, 7)
    p = cfg.proxy65
    assert (p.activation_timeout, p.idle_timeout, p.max_streams_per_user, p.max_bytes_per_user) == (
        10.0, 120.0, 3, 1024 ** 3)
    assert "upload" in cfg.enabled_modules and "proxy65" in cfg.enabled_modules
    path.write_text('[server]\ndomains = ["example.org"]\n[upload]\nslots_per_hour = 0\n'
                    '[proxy65]\nmax_streams_per_user = 0\n')
    with pytest.raises(ConfigError) as e:
        load_config(str(path))
    assert [m.split(":")[0] for m in e.value.errors] == ["upload.slots_per_hour", "proxy65.max_streams_per_user"]


def test_quota_below_the_file_size_limit_is_a_config_error(tmp_path):
    from mbxmpp.config import ConfigError, load_config

    path = tmp_path / "c.toml"
    path.write_text('[server]\ndomains = ["example.org"]\n[upload]\nmax_file_size = "10MiB"\nquota_per_user = "5MiB"\n')
    with pytest.raises(ConfigError) as e:
        load_config(str(path))
    assert e.value.errors[0].startswith("upload.quota_per_user: must be at least max_file_size (10MiB)")
