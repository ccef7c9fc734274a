import base64
import datetime
import hashlib
import hmac
import ssl

import msgpack
import pytest

from mbxmpp.errors import LocalProtocolError
from mbxmpp.stream.sasl import (FAKE_SECRET_FILE, SaslFailure, SaslServer, cb_data_from_ssl,
                                cert_der_from_pem, channel_binding_element_types,
                                load_fake_secret, mechanisms, tls_server_end_point)
from mbxmpp.stream.scram import (HASHES, ScramCredential, derive, make_credentials,
                                 parse_import_line, verify_password)

DOMAIN = "example.com"
PASSWORD = "pencil"
CB = {"tls-server-end-point": b"\x01" * 32, "tls-unique": b"\x02" * 12}


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


class Store:
    """get_credential / check_password callbacks over an in-memory account table."""

    def __init__(self, users=None):
        self.creds = {}
        self.calls = []
        for user, password in (users or {"user": PASSWORD}).items():
            self.creds[user] = make_credentials(password, iterations=512)

    def get_credential(self, username, mech):
        self.calls.append((username, mech))
        return self.creds.get(username, {}).get(mech)

    def check_password(self, username, password):
        self.calls.append((username, password))
        cred = self.creds.get(username, {}).get("SCRAM-SHA-256")
        return cred is not None and verify_password(cred, password)


def server(mech="SCRAM-SHA-256", store=None, cb_data=None, tls=True, plus_advertised=None, **kw):
    store = store or Store()
    cb_data = CB if cb_data is None else cb_data
    if plus_advertised is None:
        plus_advertised = bool(tls and cb_data)
    return SaslServer(mech, DOMAIN, store.get_credential, store.check_password, cb_data, tls,
                      plus_advertised, **kw)


def saslname(s: str) -> str:
    return s.replace("=", "=3D").replace(",", "=2C")


class ScramClient:
    """A small independent client side of RFC 5802."""

    def __init__(self, mech, username="user", password=PASSWORD, authzid=None, flag=None,
                 cb_data=b"", nonce="clientnonce123"):
        self.base = mech[:-5] if mech.endswith("-PLUS") else mech
        self.hash = HASHES[self.base]
        self.password = password
        self.cb_data = cb_data
        flag = flag or ("p=tls-server-end-point" if mech.endswith("-PLUS") else "n")
        self.gs2 = f"{flag},{'a=' + saslname(authzid) if authzid else ''},"
        self.first_bare = f"n={saslname(username)},r={nonce}"
        self.nonce = nonce

    def first(self) -> bytes:
        return (self.gs2 + self.first_bare).encode()

    def final(self, server_first: bytes, nonce=None, cbind=None, proof_xor=0, ext="") -> bytes:
        attrs = dict(a.split("=", 1) for a in server_first.decode().split(","))
        assert attrs["r"].startswith(self.nonce)
        salted = hashlib.pbkdf2_hmac(self.hash, self.password.encode(), base64.b64decode(attrs["s"]),
                                     int(attrs["i"]))
        client_key = hmac.digest(salted, b"Client Key", self.hash)
        stored_key = hashlib.new(self.hash, client_key).digest()
        cbind = b64(self.gs2.encode() + self.cb_data) if cbind is None else cbind
        without_proof = f"c={cbind},r={attrs['r'] if nonce is None else nonce}{ext}"
        auth = f"{self.first_bare},{server_first.decode()},{without_proof}".encode()
        sig = hmac.digest(stored_key, auth, self.hash)
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        proof = bytes([proof[0] ^ proof_xor]) + proof[1:]
        server_key = hmac.digest(salted, b"Server Key", self.hash)
        self.expected_v = b"v=" + base64.b64encode(hmac.digest(server_key, auth, self.hash))
        return f"{without_proof},p={b64(proof)}".encode()


def run(srv, client, initial=True, **final_kw):
    if initial:
        kind, challenge = srv.start(client.first())
    else:
        assert srv.start(None) == ("challenge", b"")
        kind, challenge = srv.respond(client.first())
    assert kind == "challenge"
    return srv.respond(client.final(challenge, **final_kw))


def fails(condition, fn, *args, **kw):
    with pytest.raises(SaslFailure) as ei:
        fn(*args, **kw)
    assert ei.value.condition == condition, ei.value
    return ei.value


# -- RFC vectors --------------------------------------------------------------------------------

@pytest.mark.parametrize("mech,salt,cnonce,snonce,proof,v", [
    ("SCRAM-SHA-1", "QSXCR+Q6sek8bf92", "fyko+d2lbbFgONRv9qkxdawL", "3rfcNHYJY1ZVvWVs7j",
     "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=", "rmF9pqV8S7suAoZWja4dJRkFsKQ="),  # RFC 5802 §5
    ("SCRAM-SHA-256", "W22ZaJ0SNY7soEsUEjb6gQ==", "rOprNGfwEbeRWgbNEkqO",
     "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0", "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
     "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),  # RFC 7677 §3
])
def test_rfc_vectors(mech, salt, cnonce, snonce, proof, v):
    cred = derive(mech, "pencil", base64.b64decode(salt), 4096)
    srv = SaslServer(mech, DOMAIN, lambda u, m: cred if (u, m) == ("user", mech) else None,
                     lambda u, p: False, {}, False, False, server_nonce=snonce)
    kind, data = srv.start(f"n,,n=user,r={cnonce}".encode())
    assert kind == "challenge"
    assert data == f"r={cnonce}{snonce},s={salt},i=4096".encode()
    kind, data = srv.respond(f"c=biws,r={cnonce}{snonce},p={proof}".encode())
    assert (kind, data) == ("success", f"v={v}".encode())
    assert srv.username == "user" and srv.authzid is None and srv.cb_type is None


# -- SCRAM exchanges ----------------------------------------------------------------------------

@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
@pytest.mark.parametrize("initial", [True, False])
def test_full_exchange(mech, initial):
    store = Store()
    srv = server(mech, store, tls=False)
    client = ScramClient(mech)
    kind, data = run(srv, client, initial=initial)
    assert kind == "success" and data == client.expected_v
    assert srv.username == "user"
    assert store.calls == [("user", mech)]


def test_server_nonce_is_random_and_extends_client_nonce():
    nonces = set()
    for _ in range(3):
        _, data = server().start(ScramClient("SCRAM-SHA-256").first())
        r = data.decode().split(",")[0][2:]
        assert r.startswith("clientnonce123") and len(r) > len("clientnonce123") + 16
        nonces.add(r)
    assert len(nonces) == 3


def test_wrong_password():
    srv = server()
    fails("not-authorized", run, srv, ScramClient("SCRAM-SHA-256", password="wrong"))
    assert srv.username is None


def test_tampered_proof():
    fails("not-authorized", run, server(), ScramClient("SCRAM-SHA-256"), proof_xor=1)


def test_unknown_user_gets_fake_but_stable_exchange():
    secret = b"k" * 32
    challenges = []
    for _ in range(2):
        srv = server(fake_secret=secret)
        _, data = srv.start(ScramClient("SCRAM-SHA-256", username="nobody").first())
        challenges.append(dict(a.split("=", 1) for a in data.decode().split(",")))
        fails("not-authorized", srv.respond,
              ScramClient("SCRAM-SHA-256", username="nobody").final(data))
    assert challenges[0]["s"] == challenges[1]["s"]  # same salt each time: no tell
    assert len(base64.b64decode(challenges[0]["s"])) == 16
    assert challenges[0]["i"] == "4096"
    _, other = server(fake_secret=secret).start(ScramClient("SCRAM-SHA-256", "other").first())
    assert challenges[0]["s"] not in other.decode()


def test_get_credential_may_refuse():
    def disabled(u, m):
        raise SaslFailure("account-disabled")
    srv = SaslServer("SCRAM-SHA-1", DOMAIN, disabled, lambda u, p: False, {}, False, False)
    fails("account-disabled", srv.start, ScramClient("SCRAM-SHA-1").first())


def test_username_is_unescaped_and_prepared():
    store = Store({"a,b=c": "pw", "juliet": "pw"})
    srv = server(store=store)
    assert run(srv, ScramClient("SCRAM-SHA-256", "a,b=c", "pw"))[0] == "success"
    assert srv.username == "a,b=c"
    srv = server(store=store)
    assert run(srv, ScramClient("SCRAM-SHA-256", "JULIET", "pw"))[0] == "success"
    assert srv.username == "juliet"
    assert ("juliet", "SCRAM-SHA-256") in store.calls


@pytest.mark.parametrize("user", ["a b", "a@b", "♚", "a/b"])
def test_invalid_username(user):
    fails("not-authorized", server().start, ScramClient("SCRAM-SHA-256", user).first())


def test_nonce_mismatch_and_replay():
    client = ScramClient("SCRAM-SHA-256")
    srv = server()
    _, data = srv.start(client.first())
    fails("not-authorized", srv.respond, client.final(data, nonce="clientnonce123forged"))
    # replay a complete client-final from an earlier exchange against a new one
    old = server()
    _, data = old.start(client.first())
    final = client.final(data)
    assert old.respond(final)[0] == "success"
    new = server()
    new.start(client.first())
    fails("not-authorized", new.respond, final)


@pytest.mark.parametrize("first", [
    b"n,,r=abc",                   # no n=
    b"n,,n=user",                  # no r=
    b"n,,r=abc,n=user",            # wrong order
    b"x,,n=user,r=abc",            # bad cbind flag
    b"n,n=user,r=abc",             # one comma short
    b"n",
    b"",
    b"n,b=x,n=user,r=abc",         # authzid without a=
    b"n,a=,n=user,r=abc",          # empty authzid
    b"n,,m=ext,n=user,r=abc",      # reserved mandatory extension
    b"n,,n=us=2Xer,r=abc",         # bad saslname escape
    b"n,,n=,r=abc",                # empty username
    b"n,,n=user,r=",               # empty nonce
    b"n,,n=user,r=a b",            # nonce not printable
    b"n,,n=user,r=abc,bad",        # bad extension attribute
    b"p=bad name,,n=user,r=abc",
    b"n,,n=\xff,r=abc",            # not UTF-8
])
def test_malformed_client_first(first):
    fails("malformed-request", server().start, first)


def test_client_first_extension_is_ignored():
    srv = server()
    _, data = srv.start(b"n,,n=user,r=abc,x=whatever")
    assert data.startswith(b"r=abc")


@pytest.mark.parametrize("mutate", [
    lambda f: f.replace(b",p=", b",q="),                  # no proof
    lambda f: f.split(b",", 1)[1],                         # no c=
    lambda f: b"c=biws," + f.split(b",", 2)[2],            # no r=
    lambda f: f.replace(b"c=biws", b"c=!!"),               # c= not base64
    lambda f: f[:-4] + b"!!!!",                            # p= not base64
    lambda f: f + b",x=trailing",                          # attribute after the proof
    lambda f: f.replace(b",p=", b",bad,p="),               # bad extension
    lambda f: f.replace(b"c=", b"c=\xff"),                 # not UTF-8
])
def test_malformed_client_final(mutate):
    client = ScramClient("SCRAM-SHA-256")
    srv = server(tls=False)
    _, data = srv.start(client.first())
    fails("malformed-request", srv.respond, mutate(client.final(data)))


def test_client_final_extension_is_accepted():
    client = ScramClient("SCRAM-SHA-256")
    srv = server(tls=False)
    _, data = srv.start(client.first())
    assert srv.respond(client.final(data, ext=",x=future"))[0] == "success"


def test_short_proof():
    client = ScramClient("SCRAM-SHA-256")
    srv = server()
    _, data = srv.start(client.first())
    without, _, _ = client.final(data).rpartition(b",p=")
    fails("not-authorized", srv.respond, without + b",p=" + base64.b64encode(b"short"))


# -- authzid ------------------------------------------------------------------------------------

@pytest.mark.parametrize("authzid", ["user@example.com", "User@Example.COM"])
def test_authzid_ok(authzid):
    srv = server()
    assert run(srv, ScramClient("SCRAM-SHA-256", authzid=authzid))[0] == "success"
    assert srv.authzid == "user@example.com"


@pytest.mark.parametrize("authzid", ["other@example.com", "user@example.org",
                                     "user@example.com/res", "@bad", "example.com"])
def test_authzid_invalid(authzid):
    fails("invalid-authzid", run, server(), ScramClient("SCRAM-SHA-256", authzid=authzid))


def test_authzid_not_checked_before_password():
    fails("not-authorized", run, server(),
          ScramClient("SCRAM-SHA-256", password="x", authzid="other@example.com"))


# -- channel binding ----------------------------------------------------------------------------

@pytest.mark.parametrize("cb_type", ["tls-server-end-point", "tls-unique"])
@pytest.mark.parametrize("mech", ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"])
def test_plus_ok(mech, cb_type):
    srv = server(mech)
    client = ScramClient(mech, flag=f"p={cb_type}", cb_data=CB[cb_type])
    kind, data = run(srv, client)
    assert (kind, data) == ("success", client.expected_v)
    assert srv.cb_type == cb_type and srv.username == "user"


def test_plus_with_authzid():
    srv = server("SCRAM-SHA-256-PLUS")
    client = ScramClient("SCRAM-SHA-256-PLUS", authzid="user@example.com",
                         cb_data=CB["tls-server-end-point"])
    assert run(srv, client)[0] == "success" and srv.authzid == "user@example.com"


def test_plus_wrong_cb_data():
    client = ScramClient("SCRAM-SHA-256-PLUS", cb_data=b"\x09" * 32)
    e = fails("not-authorized", run, server("SCRAM-SHA-256-PLUS"), client)
    assert e.text == "channel binding mismatch"


def test_cbind_header_mismatch():
    # c= must repeat the gs2 header of the client-first message
    client = ScramClient("SCRAM-SHA-256")
    fails("not-authorized", run, server(plus_advertised=False), client, cbind=b64(b"y,,"))


def test_plus_unsupported_cb_type():
    client = ScramClient("SCRAM-SHA-256-PLUS", flag="p=tls-exporter")
    e = fails("not-authorized", server("SCRAM-SHA-256-PLUS").start, client.first())
    assert e.text == "unsupported-channel-binding-type"


def test_downgrade_detected():
    client = ScramClient("SCRAM-SHA-256", flag="y")
    e = fails("not-authorized", server(plus_advertised=True).start, client.first())
    assert "downgrade" in e.text


def test_y_flag_ok_when_plus_not_offered():
    srv = server(tls=False)
    client = ScramClient("SCRAM-SHA-256", flag="y")
    assert run(srv, client)[0] == "success"


def test_p_flag_with_non_plus_mech():
    client = ScramClient("SCRAM-SHA-256", flag="p=tls-server-end-point")
    fails("malformed-request", server().start, client.first())


@pytest.mark.parametrize("flag", ["n", "y"])
def test_plus_mech_requires_binding(flag):
    client = ScramClient("SCRAM-SHA-256-PLUS", flag=flag)
    fails("malformed-request", server("SCRAM-SHA-256-PLUS").start, client.first())


@pytest.mark.parametrize("kw", [dict(tls=False, cb_data={}), dict(cb_data={}),
                                dict(plus_advertised=False)])
def test_plus_not_offered(kw):
    fails("invalid-mechanism", server, "SCRAM-SHA-256-PLUS", **kw)


@pytest.mark.parametrize("mech", ["DIGEST-MD5", "SCRAM-SHA-512", "scram-sha-1", "", "X-PLUS",
                                  "PLAIN-PLUS"])
def test_unknown_mechanism(mech):
    fails("invalid-mechanism", server, mech)


# -- state ------------------------------------------------------------------------------------

def test_misuse_is_local_error():
    srv = server()
    with pytest.raises(LocalProtocolError):
        srv.respond(b"x")
    client = ScramClient("SCRAM-SHA-256")
    run(srv, client)
    with pytest.raises(LocalProtocolError):
        srv.start(None)
    with pytest.raises(LocalProtocolError):
        srv.respond(b"x")
    failed = server()
    fails("malformed-request", failed.start, b"garbage")
    with pytest.raises(LocalProtocolError):
        failed.respond(client.first())


# -- PLAIN --------------------------------------------------------------------------------------

def test_plain_ok():
    store = Store()
    srv = server("PLAIN", store)
    assert srv.start(b"\0User\0pencil") == ("success", None)
    assert srv.username == "user" and srv.authzid is None
    assert ("user", "pencil") in store.calls


def test_plain_without_initial_response():
    srv = server("PLAIN")
    assert srv.start(None) == ("challenge", b"")
    assert srv.respond(b"\0user\0pencil") == ("success", None)


def test_plain_wrong_and_unknown():
    fails("not-authorized", server("PLAIN").start, b"\0user\0wrong")
    fails("not-authorized", server("PLAIN").start, b"\0nobody\0pencil")
    fails("not-authorized", server("PLAIN").start, b"\0bad user\0pencil")


@pytest.mark.parametrize("password", ["p\x07w", "\u0085", "tab\there"])
def test_plain_password_saslprep_refuses_is_not_authorized(password, caplog):
    caplog.set_level("INFO", logger="mbxmpp.stream.sasl")
    store = Store()
    fails("not-authorized", server("PLAIN", store).start, f"\0user\0{password}".encode())
    assert not any(call[0] == "user" and call[1] == password for call in store.calls)
    assert [r.levelname for r in caplog.records] == ["INFO"] and not caplog.records[0].exc_info


def test_fake_secret_is_created_once_private_and_kept(tmp_path):
    first = load_fake_secret(str(tmp_path))
    path = tmp_path / FAKE_SECRET_FILE
    assert len(first) == 32 and (path.stat().st_mode & 0o777) == 0o600
    assert load_fake_secret(str(tmp_path)) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == [FAKE_SECRET_FILE]
    path.write_bytes(b"short")
    with pytest.raises(ValueError):
        load_fake_secret(str(tmp_path))


def test_plain_requires_tls():
    fails("encryption-required", server, "PLAIN", tls=False)


@pytest.mark.parametrize("msg", [b"", b"user\0pencil", b"\0\0pencil", b"\0user\0",
                                 b"\0user\0pencil\0", b"\0us\xffer\0pencil"])
def test_plain_malformed(msg):
    fails("malformed-request", server("PLAIN").start, msg)


def test_plain_authzid():
    srv = server("PLAIN")
    assert srv.start(b"user@example.com\0user\0pencil")[0] == "success"
    assert srv.authzid == "user@example.com"
    fails("invalid-authzid", server("PLAIN").start, b"admin@example.com\0user\0pencil")
    fails("not-authorized", server("PLAIN").start, b"admin@example.com\0user\0wrong")


# -- mechanisms and channel-binding data ----------------------------------------------------------

def test_mechanisms():
    assert mechanisms(False, []) == ["SCRAM-SHA-256", "SCRAM-SHA-1"]
    assert mechanisms(False, ["tls-unique"]) == ["SCRAM-SHA-256", "SCRAM-SHA-1"]
    assert mechanisms(True, []) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
    assert mechanisms(True, ["tls-server-end-point"]) == [
        "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]


def test_channel_binding_element_types():
    assert channel_binding_element_types({}) == []
    assert channel_binding_element_types(
        {"tls-unique": b"u", "tls-server-end-point": b"e", "tls-exporter": b"x"}) == [
        "tls-exporter", "tls-server-end-point", "tls-unique"]


def _make_cert(key_kind="ec", hash_alg="sha256"):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.x509.oid import NameOID

    if key_kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
        algo = None
    else:
        key = (ec.generate_private_key(ec.SECP256R1()) if key_kind == "ec"
               else rsa.generate_private_key(public_exponent=65537, key_size=2048))
        algo = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha1": hashes.SHA1(),
                "sha512": hashes.SHA512()}[hash_alg]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DOMAIN)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(DOMAIN)]), critical=False)
            .sign(key, algo))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.mark.parametrize("kind,alg,expect", [
    ("ec", "sha256", "sha256"), ("ec", "sha384", "sha384"), ("rsa", "sha512", "sha512"),
])
def test_tls_server_end_point(kind, alg, expect):
    pem, _ = _make_cert(kind, alg)
    der = cert_der_from_pem(pem)
    assert der == ssl.PEM_cert_to_DER_cert(pem.decode())
    assert tls_server_end_point(der) == hashlib.new(expect, der).digest()


@pytest.mark.parametrize("weak", ["MD5", "SHA1"])
def test_tls_server_end_point_weak_hash_becomes_sha256(monkeypatch, weak):
    # RFC 5929 §4.1. cryptography no longer signs with SHA-1, so fake the parsed certificate.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    class Cert:
        signature_hash_algorithm = getattr(hashes, weak)()
    monkeypatch.setattr(x509, "load_der_x509_certificate", lambda der: Cert())
    assert tls_server_end_point(b"der") == hashlib.sha256(b"der").digest()


def test_tls_server_end_point_undefined_for_ed25519():
    pem, _ = _make_cert("ed25519")
    assert tls_server_end_point(cert_der_from_pem(pem)) is None


class FakeSSL:
    def __init__(self, version, unique=b"u" * 12, exporter=None):
        self._version, self._unique = version, unique
        if exporter is not None:
            self.export_keying_material = exporter

    def version(self):
        return self._version

    def get_channel_binding(self, cb_type="tls-unique"):
        assert cb_type == "tls-unique"
        return self._unique


def test_cb_data_from_ssl_fakes():
    assert cb_data_from_ssl(FakeSSL("TLSv1.2")) == {"tls-unique": b"u" * 12}
    assert cb_data_from_ssl(FakeSSL("TLSv1.3")) == {}
    calls = []

    def exporter(label, length, context):
        calls.append((label, length, context))
        return b"x" * length
    assert cb_data_from_ssl(FakeSSL("TLSv1.3", exporter=exporter)) == {"tls-exporter": b"x" * 32}
    assert calls == [(b"EXPORTER-Channel-Binding", 32, b"")]

    def broken(*a):
        raise TypeError("different API")
    assert cb_data_from_ssl(FakeSSL("TLSv1.3", exporter=broken)) == {}


def _handshake(tmp_path, max_version):
    pem, key = _make_cert("ec")
    (tmp_path / "c.pem").write_bytes(pem)
    (tmp_path / "k.pem").write_bytes(key)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    sctx.maximum_version = max_version
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.load_verify_locations(tmp_path / "c.pem")
    bios = [ssl.MemoryBIO() for _ in range(4)]
    s = sctx.wrap_bio(bios[0], bios[1], server_side=True)
    c = cctx.wrap_bio(bios[2], bios[3], server_hostname=DOMAIN)
    for _ in range(10):
        for obj, out_bio, peer_in in ((c, bios[3], bios[0]), (s, bios[1], bios[2])):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
            peer_in.write(out_bio.read())
    c.do_handshake()
    s.do_handshake()
    return s, c, cert_der_from_pem(pem)


def test_cb_data_real_tls12(tmp_path):
    s, c, der = _handshake(tmp_path, ssl.TLSVersion.TLSv1_2)
    data = cb_data_from_ssl(s, der)
    assert data["tls-unique"] == c.get_channel_binding("tls-unique")
    assert data["tls-server-end-point"] == hashlib.sha256(c.getpeercert(binary_form=True)).digest()
    assert "tls-exporter" not in data


def test_cb_data_real_tls13(tmp_path):
    s, c, der = _handshake(tmp_path, ssl.TLSVersion.TLSv1_3)
    assert s.version() == "TLSv1.3"
    data = cb_data_from_ssl(s, der)
    assert "tls-unique" not in data  # RFC 9266: not on TLS 1.3
    assert data["tls-server-end-point"] == hashlib.sha256(c.getpeercert(binary_form=True)).digest()
    assert cb_data_from_ssl(s) == {k: v for k, v in data.items() if k != "tls-server-end-point"}


def test_slixmpp_client_interop():
    """slixmpp's SCRAM client as an independent oracle (with tls-unique channel binding)."""
    mechs = pytest.importorskip("slixmpp.util.sasl.mechanisms")
    cb = {"tls-unique": b"\x07" * 12}
    for mech in ("SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"):
        creds = {"username": b"user", "password": PASSWORD.encode(), "authzid": b"",
                 "channel_binding": cb["tls-unique"]}
        security = {"encrypted": True, "unencrypted_scram": True, "tls_version": "TLSv1.2",
                    "binding_proposed": mech.endswith("-PLUS")}
        client = mechs.SCRAM(mech, creds, security)
        srv = server(mech, cb_data=cb, plus_advertised=mech.endswith("-PLUS"))
        kind, data = srv.start(client.process())
        kind, data = srv.respond(client.process(data))
        assert kind == "success"
        client.process(data)  # raises if the server signature is wrong
        assert srv.username == "user"
        assert srv.cb_type == ("tls-unique" if mech.endswith("-PLUS") else None)


# -- credentials ----------------------------------------------------------------------------------

def test_derive_and_verify():
    cred = derive("SCRAM-SHA-1", "pencil", base64.b64decode("QSXCR+Q6sek8bf92"), 4096)
    assert verify_password(cred, "pencil")
    assert not verify_password(cred, "pencil ")
    assert not verify_password(cred, "bad\x00")
    creds = make_credentials("s3cret", iterations=64)
    assert set(creds) == {"SCRAM-SHA-1", "SCRAM-SHA-256"}
    assert creds["SCRAM-SHA-1"].salt != creds["SCRAM-SHA-256"].salt
    assert len(creds["SCRAM-SHA-256"].stored_key) == 32 and len(creds["SCRAM-SHA-1"].server_key) == 20
    assert all(verify_password(c, "s3cret") and c.iterations == 64 for c in creds.values())
    assert derive("SCRAM-SHA-256", "x", None).iterations == 4096


def test_password_is_prepared():
    cred = derive("SCRAM-SHA-256", "pass\u00a0word", b"salt", 16)  # non-ASCII space -> U+0020
    assert verify_password(cred, "pass word")
    assert verify_password(derive("SCRAM-SHA-256", "e\u0301", b"s", 16), "\u00e9")  # NFC
    for bad in ("", "a\x07b"):
        with pytest.raises(ValueError):
            derive("SCRAM-SHA-256", bad)
    with pytest.raises(ValueError):
        derive("SCRAM-SHA-512", "x")
    with pytest.raises(ValueError):
        derive("SCRAM-SHA-1", "x", iterations=0)


def test_record_roundtrip():
    cred = derive("SCRAM-SHA-256", "pw", iterations=16)
    rec = msgpack.unpackb(msgpack.packb(cred.to_record()))
    assert ScramCredential.from_record(rec) == cred
    with pytest.raises(AttributeError):  # frozen
        cred.salt = b""  # type: ignore[misc]


# -- import lines ---------------------------------------------------------------------------------

def test_import_password_lines():
    assert parse_import_line("juliet@example.com s3cret\n") == ("juliet@example.com", "s3cret", None)
    assert parse_import_line("Juliet@Example.COM  two words \r\n") == (
        "juliet@example.com", "two words ", None)
    assert parse_import_line("a@example.com\tscram") == ("a@example.com", "scram", None)


def test_import_scram_line():
    cred = derive("SCRAM-SHA-256", "pw", iterations=4096)
    line = (f"romeo@example.net scram SCRAM-SHA-256 {b64(cred.salt)} 4096 "
            f"{b64(cred.stored_key)} {b64(cred.server_key)}\n")
    jid, password, got = parse_import_line(line)
    assert (jid, password, got) == ("romeo@example.net", None, cred)
    assert verify_password(got, "pw")


@pytest.mark.parametrize("line,msg", [
    ("", "empty"),
    ("   \n", "empty"),
    ("juliet@example.com", "missing password"),
    ("juliet@example.com   ", "missing password"),
    ("@example.com pw", "invalid JID"),
    ("example.com pw", "not an account JID"),
    ("a@example.com/res pw", "not an account JID"),
    ("a@example.com bad\x07pw", "password not allowed"),
    ("a@example.com scram SCRAM-SHA-1 c2FsdA== 4096 x", "scram line needs"),
    ("a@example.com scram SCRAM-SHA-512 c2FsdA== 4096 AAAA AAAA", "unknown SCRAM mechanism"),
    ("a@example.com scram SCRAM-SHA-1 c2FsdA== many AAAA AAAA", "ITERATIONS"),
    ("a@example.com scram SCRAM-SHA-1 c2FsdA== 0 AAAA AAAA", "ITERATIONS"),
    ("a@example.com scram SCRAM-SHA-1 !!! 4096 AAAA AAAA", "SALT_B64"),
    ("a@example.com scram SCRAM-SHA-1 c2FsdA== 4096 AAAA AAAA", "must be 20 bytes"),
])
def test_import_errors(line, msg):
    with pytest.raises(ValueError, match=msg):
        parse_import_line(line)
