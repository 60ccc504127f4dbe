#!/usr/bin/env python3
"""Loop cost of control-API agents snapshots at N agents (BENCHMARKS.md
"snapshot").

Starts a release observer (plaintext UDP on loopback, capacity 2^20,
threshold 10 min so nobody stalls), feeds it N agents with varta-bench's
UDP load generator (`scrape-load`: sendmmsg, every agent beats once per
--interval-ms), waits until all N are alive, then takes K snapshots
(`GET /v1/status` every 300 ms: older than the 250 ms share window, so each
request makes the loop copy a new one) twice: while the load keeps beating
(ingest running between chunks) and after it stopped (quiet). In between,
--changed-snapshots more under load, spaced two beat intervals + 1 s apart:
every agent has beaten since the buffer such a snapshot reuses was filled,
so each copies the whole mirror again (the worst case; a copy without a
reusable buffer costs the same) — first with
the load running, then with the load generator stopped (SIGSTOP) for each
copy, which gives the copy both cores. Also prints the loop time the
background syncs of the snapshot mirror took while the load ran. Prints the
loop time of each snapshot (`snapshot.loop_us`, all chunks together) and
its longest single chunk (`snapshot.longest_chunk_us`), and a summary.
With `--cli PATH` (the `varta` binary) it then times `varta status` (and
`varta status --json`) against the same observer, quiet, K runs each
0.5 s apart so that no two share a snapshot: wall time from exec to exit.

    python3 crates/varta-bench/snapshot_measure.py \\
        --observer target/release/varta-watch --bench target/release/varta-bench
"""
import argparse, json, os, re, signal, statistics, subprocess, sys, tempfile, time


def get(ctl, path):
    out = subprocess.run(["curl", "-s", "--max-time", "30", "--unix-socket", ctl,
                          "http://x" + path], capture_output=True).stdout
    return json.loads(out)


def summary(label, rows):
    # The status polls while the agents arrive already made snapshots, so
    # both recycled buffers are warm: every row is steady state.
    loop = [r[0] / 1000 for r in rows]
    chunk = [r[1] / 1000 for r in rows]
    copied = [r[3] for r in rows if r[3] is not None]
    full = sum(1 for r in rows if r[4])
    print(f"{label}: {len(rows)} snapshots of {rows[-1][2]} agents ({full} full copies; "
          f"records copied median {statistics.median(copied) if copied else '?'}): loop median "
          f"{statistics.median(loop):.2f} ms, min-max {min(loop):.2f}-{max(loop):.2f}; "
          f"longest chunk median {statistics.median(chunk):.3f} ms, "
          f"min-max {min(chunk):.3f}-{max(chunk):.3f}")


def mirror_totals(ctl):
    s = get(ctl, "/v1/status").get("snapshot", {})
    return time.time(), s.get("mirror_syncs", 0), s.get("mirror_synced", 0), s.get("mirror_sync_us", 0)


def background(label, a, b):
    """Loop time the background mirror syncs took between two totals."""
    secs = b[0] - a[0]
    print(f"{label}: {b[1] - a[1]} background mirror syncs of {b[2] - a[2]} agent changes in "
          f"{secs:.0f} s: {(b[3] - a[3]) / 1000:.1f} ms of loop time "
          f"({(b[3] - a[3]) / 1000 / secs:.2f} ms per second)")


def snapshots(ctl, k, label, spacing_s=0.3, pause=None):
    rows = []
    for _ in range(k):
        time.sleep(spacing_s)
        if pause:
            # The load generator stopped for the copy: a quiet copy of
            # every slot (it resumes, and catches up, afterwards).
            pause.send_signal(signal.SIGSTOP)
            time.sleep(0.3)
        try:
            st = get(ctl, "/v1/status")
        finally:
            if pause:
                pause.send_signal(signal.SIGCONT)
        s = st["snapshot"]
        rows.append((s["loop_us"], s["longest_chunk_us"], s["agents"], s.get("copied"), s.get("full")))
        print(label, rows[-1], flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--observer", default="target/release/varta-watch")
    ap.add_argument("--bench", default="target/release/varta-bench")
    ap.add_argument("--agents", type=int, default=1_000_000)
    ap.add_argument("--snapshots", type=int, default=12)
    ap.add_argument("--interval-ms", type=int, default=10_000)
    ap.add_argument("--cli", default=None, help="the varta binary: also time `varta status`")
    ap.add_argument("--changed-snapshots", type=int, default=3,
                    help="snapshots spaced 2 beat intervals + 1 s apart under load, so every "
                         "agent changed since the buffer a snapshot reuses (the worst case)")
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="varta-snap-")
    out = open(os.path.join(d, "out"), "w+")
    obs = subprocess.Popen([a.observer, "--socket", os.path.join(d, "w.sock"),
                            "--tracker-capacity", "1048576", "--threshold-ms", "600000",
                            "--udp-port", "0", "--i-accept-plaintext-udp",
                            "--udp-rcvbuf-bytes", "67108864", "--no-export-beats"],
                           stdout=out, stderr=subprocess.DEVNULL)
    load = None
    try:
        port = None
        for _ in range(100):
            time.sleep(0.1)
            out.seek(0)
            m = re.search(r"^udp: .*:(\d+)$", out.read(), re.M)
            if m:
                port = int(m.group(1))
                break
        if port is None:
            sys.exit("observer printed no udp port")
        ctl = os.path.join(d, "w.ctl")
        load = subprocess.Popen([a.bench, "scrape-load", "--target",
                                 f"127.0.0.1:{port},1000,{a.agents}",
                                 "--interval-ms", str(a.interval_ms), "--threads", "1"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        t = time.time()
        while True:
            time.sleep(1)
            # While a million agents are admitted the loop may answer
            # late (an error body): ask again next second.
            alive = get(ctl, "/v1/status").get("counts", {}).get("alive", 0)
            print(f"{alive} alive after {time.time()-t:.0f} s", file=sys.stderr, flush=True)
            if alive >= a.agents:
                break
            if time.time() - t > 600:
                sys.exit("agents did not all arrive")
        t0 = mirror_totals(ctl)
        busy = snapshots(ctl, a.snapshots, "under load")
        spacing = 2 * a.interval_ms / 1000 + 1
        every = snapshots(ctl, a.changed_snapshots, "every agent changed",
                          spacing_s=spacing) if a.changed_snapshots else []
        every_quiet = snapshots(ctl, a.changed_snapshots, "every agent changed, load paused",
                                spacing_s=spacing, pause=load) if a.changed_snapshots else []
        t1 = mirror_totals(ctl)
        load.stdin.close()
        load.wait()
        load = None
        time.sleep(1)
        quiet = snapshots(ctl, a.snapshots, "quiet")
        summary(f"under load ({a.agents} agents, one beat each per {a.interval_ms} ms)", busy)
        if every:
            summary("under load, every agent changed since the reused buffer "
                    f"(snapshots {spacing:.0f} s apart)", every)
            summary("every agent changed, load paused (SIGSTOP) during the copy", every_quiet)
        summary("quiet (no ingest)", quiet)
        background("under load (all phases)", t0, t1)
        if a.cli:
            for args in (["status"], ["status", "--json"]):
                walls = []
                for _ in range(a.snapshots):
                    time.sleep(0.5)
                    t0 = time.perf_counter()
                    r = subprocess.run([a.cli, "--control-socket", ctl] + args,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                    walls.append((time.perf_counter() - t0) * 1000)
                    if r.returncode != 0:
                        sys.exit(f"varta {' '.join(args)} failed: {r.stderr.decode().strip()}")
                print(f"varta {' '.join(args)} at {a.agents} agents ({len(walls)} runs): wall median "
                      f"{statistics.median(walls):.1f} ms, min-max {min(walls):.1f}-{max(walls):.1f}")
    finally:
        if load:
            load.kill()
        obs.terminate()
        obs.wait()


if __name__ == "__main__":
    main()
