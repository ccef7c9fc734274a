"""XEP-0227 import benchmark (stand-alone): ``python perf/bench_import.py [--accounts 100000]``.

Writes a XEP-0227 file of ``--accounts`` accounts, each with SCRAM credentials, a roster of two
contacts, a vCard and a small archive (``--messages`` results), then times
``python -m mbxmpp import FILE`` on a fresh data directory and reports its wall time, accounts/s,
messages/s and the importing process's peak memory (ru_maxrss): the import streams (one
``<user>`` at a time, one write transaction per batch), so the peak must not grow with the file.
"""

from __future__ import annotations

import argparse
import base64
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from mbxmpp.stream.scram import derive  # noqa: E402 (after the sys.path entry above)

DOMAIN = "bench.example"


def write_file(path: str, accounts: int, messages: int) -> int:
    c = derive("SCRAM-SHA-1", "bench password", b"bench-salt-16byt", 4096)
    b64 = lambda b: base64.b64encode(b).decode()
    scram = (f"<scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'>"
             f"<iter-count>4096</iter-count><salt>{b64(c.salt)}</salt>"
             f"<server-key>{b64(c.server_key)}</server-key><stored-key>{b64(c.stored_key)}"
             f"</stored-key></scram-credentials>")
    base = 1_700_000_000
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"<?xml version='1.0' encoding='UTF-8'?>\n<server-data xmlns='urn:xmpp:pie:0'>"
                f"<host jid='{DOMAIN}'>\n")
        for i in range(accounts):
            peer = f"u{(i + 1) % accounts}@{DOMAIN}"
            f.write(f"<user name='u{i}'>{scram}<query xmlns='jabber:iq:roster'>"
                    f"<item jid='{peer}' subscription='both' name='Peer'><group>Friends</group>"
                    f"</item><item jid='ext{i}@other.example' subscription='to'/></query>"
                    f"<vCard xmlns='vcard-temp'><FN>User {i}</FN></vCard>"
                    f"<archive xmlns='urn:xmpp:pie:0#mam'>")
            for m in range(messages):
                t = base + i * 60 + m
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
                f.write(f"<result xmlns='urn:xmpp:mam:2' id='r{i}-{m}'><forwarded "
                        f"xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' "
                        f"stamp='{stamp}'/><message xmlns='jabber:client' type='chat' "
                        f"from='{peer}/phone' to='u{i}@{DOMAIN}' id='m{m}'><body>Message {m} "
                        f"of a fairly ordinary chat of typical length.</body></message>"
                        f"</forwarded></result>")
            f.write("</archive></user>\n")
        f.write("</host></server-data>\n")
    return os.path.getsize(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--messages", type=int, default=5, help="archived messages per account")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="mbxmpp-bench-import-")
    try:
        src = os.path.join(tmp, "export.xml")
        t = time.perf_counter()
        size = write_file(src, args.accounts, args.messages)
        gen_s = time.perf_counter() - t
        cfg = os.path.join(tmp, "mbxmpp.toml")
        with open(cfg, "w") as f:
            f.write(f'[server]\ndomains = ["{DOMAIN}"]\ndata_dir = "{tmp}/data"\n')
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "mbxmpp", "-c", cfg, "import", src],
                           capture_output=True, text=True, env=env, check=False)
        took = time.perf_counter() - t
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if r.returncode != 0:
            print(r.stdout[-2000:], r.stderr[-2000:], file=sys.stderr)
            return 1
        msgs = args.accounts * args.messages
        db = sum(e.stat().st_size for e in os.scandir(os.path.join(tmp, "data", "db")))
        print(f"file: {args.accounts} accounts, {msgs} archived messages, {size / 1e6:.1f} MB "
              f"(written in {gen_s:.1f} s)")
        print(f"import: {took:.1f} s, {args.accounts / took:.0f} accounts/s, "
              f"{msgs / took:.0f} messages/s, peak memory {peak_kb / 1024:.0f} MiB, "
              f"database {db / 1e6:.0f} MB")
        print(r.stdout.strip())
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
