"""Memory per idle keep-alive client connection: strangler vs nginx (and
haproxy) in front of the same backend, side by side in one run.

    python3 benches/idle_conns.py [CONNECTIONS] [STRANGLER_BINARY]

Each proxy gets CONNECTIONS client connections that each send one request
and then stay open, idle. The figure is the growth of the proxy's resident
memory (VmRSS of all its processes) divided by the connections, in KiB.
Needs nginx and haproxy (benches/load.sh installs them) and a release build
(`cargo build --release`). Never run by CI; see ../shared/PERFORMANCE.md.
"""

import os, resource, shutil, signal, socket, subprocess, sys, tempfile, time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
BIN = sys.argv[2] if len(sys.argv) > 2 else "target/release/strangler"
work = tempfile.mkdtemp(prefix="strangler-idle-")
os.chmod(work, 0o755)
procs = []
BODY = '{"id":7,"status":"open"}'


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start(cmd, **kw):
    log = open(f"{work}/{os.path.basename(cmd[0])}.log", "w")
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, **kw)
    procs.append(p)
    return p


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    logs = "".join(open(os.path.join(work, f)).read()[-2000:] for f in os.listdir(work) if f.endswith(".log"))
    raise SystemExit(f"nothing listens on {port}\n{logs}")


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def family(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid] + [int(p) for p in out]


def idle_connections(port, n):
    """Opens n connections, each answered once, and keeps them open."""
    conns = []
    request = b"GET /small HTTP/1.1\r\nHost: bench\r\n\r\n"
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(request)
        conns.append(s)
    for s in conns:
        got = b""
        while b"\r\n\r\n" not in got or not got.endswith(BODY.encode()):
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit(f"port {port} closed a connection")
            got += chunk
    return conns


try:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4 * N + 1024), hard))
    bport, nport, hport, sport = free_port(), free_port(), free_port(), free_port()
    common = f"pid {work}/%s.pid; error_log {work}/%s.err; events {{ worker_connections {4 * N}; }}"
    with open(f"{work}/backend.conf", "w") as f:
        f.write(common % ("backend", "backend") + f"""
worker_processes 1; worker_rlimit_nofile {4 * N};
http {{ access_log off; keepalive_requests 1000000; keepalive_timeout 600s;
  server {{ listen 127.0.0.1:{bport};
    location / {{ default_type application/json; return 200 '{BODY}'; }} }} }}""")
    with open(f"{work}/nginx.conf", "w") as f:
        f.write(common % ("nginx", "nginx") + f"""
worker_processes 1; worker_rlimit_nofile {4 * N};
http {{ access_log off; keepalive_requests 1000000; keepalive_timeout 600s;
  upstream backend {{ server 127.0.0.1:{bport}; keepalive 64; }}
  server {{ listen 127.0.0.1:{nport};
    location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }} }} }}""")
    with open(f"{work}/haproxy.cfg", "w") as f:
        f.write(f"""global
  nbthread 1
  maxconn {2 * N + 100}
defaults
  mode http
  timeout connect 5s
  timeout client 600s
  timeout server 30s
  timeout http-keep-alive 600s
  http-reuse always
frontend fe
  bind 127.0.0.1:{hport}
  default_backend be
backend be
  server b1 127.0.0.1:{bport}
""")
    with open(f"{work}/strangler.toml", "w") as f:
        f.write(f"""[listen]
proxy = "127.0.0.1:{sport}"
admin = "127.0.0.1:{free_port()}"
workers = 1
header_read_timeout = "600s"
[store]
path = "{work}/data"
[upstreams.backend]
urls = ["http://127.0.0.1:{bport}"]
[default]
upstream = "backend"
""")
    start(["nginx", "-c", f"{work}/backend.conf", "-g", "daemon off;"])
    wait_port(bport)
    nginx = start(["nginx", "-c", f"{work}/nginx.conf", "-g", "daemon off;"])
    haproxy = start(["haproxy", "-f", f"{work}/haproxy.cfg"])
    strangler = start([BIN, "serve", "--config", f"{work}/strangler.toml", "--access-log", "off"],
                      env=dict(os.environ, RUST_LOG="warn"))
    for p in (nport, hport, sport):
        wait_port(p)
    time.sleep(0.5)
    print(f"{N} idle keep-alive client connections each, after one request; KiB of RSS per connection\n")
    print("| proxy | RSS before (KiB) | RSS after (KiB) | KiB per idle connection |")
    print("|---|---|---|---|")
    for name, proc, port in (("nginx", nginx, nport), ("haproxy", haproxy, hport), ("strangler", strangler, sport)):
        pids = family(proc.pid)
        # One warm-up connection, so first-use allocations are not counted.
        idle_connections(port, 1)[0].close()
        time.sleep(0.2)
        before = rss_kib(pids)
        conns = idle_connections(port, N)
        time.sleep(0.5)
        after = rss_kib(pids)
        print(f"| {name} | {before} | {after} | {(after - before) / N:.1f} |")
        for s in conns:
            s.close()
finally:
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(5)
        except Exception:
            p.kill()
    shutil.rmtree(work, ignore_errors=True)
