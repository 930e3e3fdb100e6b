"""Drives benches/load.sh: starts a backend, nginx, haproxy and strangler
pinned to CPU 0, loads them alternately with wrk pinned to CPU 1, and
prints ratios to nginx. See ../shared/PERFORMANCE.md for the method."""

import os, re, shutil, signal, socket, subprocess, sys, tempfile, time

FIXED_RATE, ROUNDS, SECS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
TICK = os.sysconf("SC_CLK_TCK")
SMALL = '{"id":7,"user":3,"status":"open","items":[{"sku":"sku-1","qty":2,"price":12.5},{"sku":"sku-42","qty":1,"price":3.0}],"total":28.0,"currency":"EUR","served_by":"monolith","note":"a small JSON body of 226 bytes....."}'
work = tempfile.mkdtemp(prefix="strangler-load-")
os.chmod(work, 0o755)  # nginx workers run as nobody
FLOOR = sys.argv[4] if len(sys.argv) > 4 else None
# An A/B run: another strangler build (say, main before a change) measured
# beside this one, with the same config, in the same rounds.
BASELINE = os.environ.get("STRANGLER_BASELINE")
procs = []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start(cmd, **kw):
    p = subprocess.Popen(["taskset", "-c", "0"] + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    procs.append(p)
    return p


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid] + [int(p) for p in out]


def wrk(url, secs, conns=50):
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{secs}s", url],
                         capture_output=True, text=True).stdout
    n = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return n, rps, int(errors.group(1)) if errors else 0


def measure(name, pids, url, secs, conns=50):
    wrk(url, 2, conns)  # warm-up
    before = cpu_ticks(pids)
    n, rps, errors = wrk(url, secs, conns)
    after = cpu_ticks(pids)
    us = (after - before) / TICK * 1e6 / max(n, 1)
    return us, rps, errors


def fixed_rate(url, rate, secs):
    out = subprocess.run(["taskset", "-c", "1", FIXED_RATE, url, str(int(rate)), str(secs), "50"],
                         capture_output=True, text=True).stdout
    m = re.search(r"p50_ms=([\d.]+) p99_ms=([\d.]+) errors=(\d+)", out)
    return float(m.group(1)), float(m.group(2)), int(m.group(3))


try:
    # Backend: nginx serving a 226-byte JSON and a 1 MiB file.
    bport, nport, hport, sport = free_port(), free_port(), free_port(), free_port()
    # Shadow backends: one answering the same body, one with a real difference.
    b2port, b3port, shport, mmport = free_port(), free_port(), free_port(), free_port()
    OTHER = SMALL.replace('"total":28.0', '"total":"28.0"')
    with open(f"{work}/big", "wb") as f:
        f.write(b"x" * (1 << 20))
    os.chmod(f"{work}/big", 0o644)
    fport = free_port()
    common = f"pid {work}/%s.pid; error_log {work}/%s.err; events {{ worker_connections 4096; }}"
    with open(f"{work}/backend.conf", "w") as f:
        f.write(common % ("backend", "backend") + f"""
worker_processes 1;
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{bport}; root {work};
    location = /small {{ default_type application/json; return 200 '{SMALL}'; }}
    location = /big {{ }} }}
  server {{ listen 127.0.0.1:{b2port};
    location / {{ default_type application/json; return 200 '{SMALL}'; }} }}
  server {{ listen 127.0.0.1:{b3port};
    location / {{ default_type application/json; return 200 '{OTHER}'; }} }} }}""")
    with open(f"{work}/nginx.conf", "w") as f:
        f.write(common % ("nginx", "nginx") + f"""
worker_processes 1;
http {{ access_log off; keepalive_requests 1000000;
  upstream backend {{ server 127.0.0.1:{bport}; keepalive 64; }}
  server {{ listen 127.0.0.1:{nport};
    location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }} }} }}""")
    with open(f"{work}/haproxy.cfg", "w") as f:
        f.write(f"""global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:{hport}
  default_backend be
backend be
  server b1 127.0.0.1:{bport}
""")
    routes = []
    for i in range(99):
        kind = i % 3
        if kind == 0:
            routes.append(f'[[routes]]\nname = "r{i}"\nmatch.path_prefix = "/svc{i}/items"\nupstream = "backend"\n')
        elif kind == 1:
            routes.append(f'[[routes]]\nname = "r{i}"\nmatch.path_template = "/api/v1/t{i}/{{id}}"\nupstream = "backend"\n')
        else:
            routes.append(f'[[routes]]\nname = "r{i}"\nmatch.path_prefix = "/h{i}"\nmatch.headers = {{ "x-tenant" = "t{i}" }}\nupstream = "backend"\n')
    routes.append('[[routes]]\nname = "last"\nmatch.path_prefix = "/"\nsplit = { backend = 100 }\n')
    def strangler_config(name, port, shadow_port=None):
        last = routes[-1]
        if shadow_port:
            last += 'shadow = { upstream = "shadow", percent = 100 }\n'
        with open(f"{work}/{name}.toml", "w") as f:
            f.write(f"""[listen]
proxy = "127.0.0.1:{port}"
admin = "127.0.0.1:{free_port()}"
workers = 1
[store]
path = "{work}/{name}-data"
[upstreams.backend]
urls = ["http://127.0.0.1:{bport}"]
[upstreams.shadow]
urls = ["http://127.0.0.1:{shadow_port or b2port}"]
[default]
upstream = "backend"
""" + "\n".join(routes[:-1] + [last]))

    strangler_config("strangler", sport)
    baseport = free_port()
    if BASELINE:
        strangler_config("baseline", baseport)
    # Shadow on for 100 % of GETs of the hit route: answers that match, and
    # answers that all differ (every request a stored diff: the worst case).
    strangler_config("shadow", shport, b2port)
    strangler_config("mismatch", mmport, b3port)

    start(["nginx", "-c", f"{work}/backend.conf", "-g", "daemon off;"])
    wait_port(bport)
    nginx = start(["nginx", "-c", f"{work}/nginx.conf", "-g", "daemon off;"])
    haproxy = start(["haproxy", "-f", f"{work}/haproxy.cfg"])
    strangler = start(["target/release/strangler", "serve", "--config", f"{work}/strangler.toml", "--access-log", "off"],
                      env=dict(os.environ, RUST_LOG="warn"))
    shadowed = start(["target/release/strangler", "serve", "--config", f"{work}/shadow.toml", "--access-log", "off"],
                     env=dict(os.environ, RUST_LOG="warn"))
    mismatched = start(["target/release/strangler", "serve", "--config", f"{work}/mismatch.toml", "--access-log", "off"],
                       env=dict(os.environ, RUST_LOG="warn"))
    baseline = start([BASELINE, "serve", "--config", f"{work}/baseline.toml", "--access-log", "off"],
                     env=dict(os.environ, RUST_LOG="warn")) if BASELINE else None
    if baseline:
        wait_port(baseport)
    floor = start([FLOOR, f"127.0.0.1:{fport}", f"127.0.0.1:{bport}"]) if FLOOR else None
    for p in (nport, hport, sport, shport, mmport) + ((fport,) if floor else ()):
        wait_port(p)
    time.sleep(0.5)
    targets = {
        "nginx": (children(nginx.pid), nport),
        "haproxy": (children(haproxy.pid), hport),
        "strangler": (children(strangler.pid), sport),
    }
    if baseline:
        targets["strangler (baseline build)"] = (children(baseline.pid), baseport)
    if floor:
        # The hyper floor: a minimal hyper proxy (benches/floor_proxy.rs).
        targets["hyper floor"] = (children(floor.pid), fport)
    targets["strangler, shadow 100% (matching)"] = (children(shadowed.pid), shport)
    targets["strangler, shadow 100% (all differ)"] = (children(mismatched.pid), mmport)
    # 1 MiB bodies are measured without shadowing.
    no_big = {"strangler, shadow 100% (matching)", "strangler, shadow 100% (all differ)"}
    load = os.getloadavg()[0]
    print(f"load average before: {load:.2f} (other load on this machine skews absolute numbers; ratios are from the same run)")

    results = {k: {"small": [], "big": []} for k in targets}
    for r in range(ROUNDS):
        for name, (pids, port) in targets.items():
            results[name]["small"].append(measure(name, pids, f"http://127.0.0.1:{port}/small", SECS))
        for name, (pids, port) in targets.items():
            if name in no_big:
                results[name]["big"].append((float("nan"), 0.0, 0))
                continue
            results[name]["big"].append(measure(name, pids, f"http://127.0.0.1:{port}/big", max(SECS // 2, 3), 10))

    def median(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2]

    summary = {}
    for name in targets:
        s = results[name]["small"]
        b = results[name]["big"]
        summary[name] = {
            "cpu_small": median([x[0] for x in s]),
            "rps_small": median([x[1] for x in s]),
            "cpu_big": median([x[0] for x in b]),
            "errors": sum(x[2] for x in s + b),
        }
    # Latency: every target once per round, rounds alternating as for CPU
    # (one run each drifts with the machine's other load), medians.
    def latencies(names, rate):
        lat = {name: [] for name in names}
        for _ in range(ROUNDS):
            for name in names:
                lat[name].append(fixed_rate(f"http://127.0.0.1:{targets[name][1]}/small", rate, SECS))
        return lat

    rate = summary["nginx"]["rps_small"] / 2
    # The shadow variants are compared with strangler below, at a rate they
    # all sustain (nginx's half may be past their saturation).
    for name in no_big:
        summary[name].update(p50=float("nan"), p99=float("nan"), p99_all=[])
    for name, lat in latencies([n for n in targets if n not in no_big], rate).items():
        summary[name]["p50"] = median([x[0] for x in lat])
        summary[name]["p99"] = median([x[1] for x in lat])
        summary[name]["p99_all"] = [x[1] for x in lat]
        summary[name]["errors"] += sum(x[2] for x in lat)

    # Shadowing doubles the upstream work: its latency is compared at half of
    # the slowest shadow variant's saturation rate, which all three sustain.
    shadow_names = ["strangler"] + sorted(no_big)
    shadow_rate = min(summary[n]["rps_small"] for n in shadow_names) / 2
    for name, lat in latencies(shadow_names, shadow_rate).items():
        summary[name]["shadow_p99"] = median([x[1] for x in lat])
        summary[name]["errors"] += sum(x[2] for x in lat)

    base = summary["nginx"]
    print(f"\n{ROUNDS} rounds of {SECS}s, wrk -t1 -c50 on CPU 1, proxies and backend on CPU 0; medians.")
    print("p99 per round: " + "; ".join(f"{n} " + " ".join(f"{x:.2f}" for x in s["p99_all"]) for n, s in summary.items() if s["p99_all"]))
    print(f"fixed rate for latency: {rate:.0f} req/s (half of nginx's saturation rate)\n")
    print("| proxy | CPU us/req (226 B) | vs nginx | req/s at saturation | p50 ms | p99 ms | p99 vs nginx | CPU us/req (1 MiB) | vs nginx | vs haproxy | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, s in summary.items():
        print(f"| {name} | {s['cpu_small']:.1f} | {s['cpu_small'] / base['cpu_small']:.2f}x | {s['rps_small']:.0f} | "
              f"{s['p50']:.2f} | {s['p99']:.2f} | {s['p99'] / base['p99']:.2f}x | {s['cpu_big']:.0f} | "
              f"{s['cpu_big'] / base['cpu_big']:.2f}x | {s['cpu_big'] / summary['haproxy']['cpu_big']:.2f}x | {s['errors']} |")
    off = summary["strangler"]
    print("\nShadowing cost, against strangler with shadow off in the same run (goal: CPU at most 1.6x, p99 unchanged within noise);")
    print(f"p99 at {shadow_rate:.0f} req/s, half of the slowest variant's saturation rate:\n")
    print("| variant | CPU us/req | vs shadow off | req/s at saturation | p99 ms | vs shadow off |")
    print("|---|---|---|---|---|---|")
    for name in shadow_names:
        s = summary[name]
        print(f"| {name} | {s['cpu_small']:.1f} | {s['cpu_small'] / off['cpu_small']:.2f}x | {s['rps_small']:.0f} | "
              f"{s['shadow_p99']:.2f} | {s['shadow_p99'] / off['shadow_p99']:.2f}x |")
    if BASELINE:
        b = summary["strangler (baseline build)"]
        print(f"\nA/B: this build {off['cpu_small'] / b['cpu_small']:.2f}x the baseline build's CPU per request (226 B), "
              f"{off['cpu_big'] / b['cpu_big']:.2f}x at 1 MiB, p99 {off['p99'] / b['p99']:.2f}x ({BASELINE}).")
finally:
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(5)
        except Exception:
            p.kill()
    shutil.rmtree(work, ignore_errors=True)
