"""Where a path's CPU goes, per gigabyte moved: reads `perf script -F tid,ip,sym` output of a
system-wide `perf record -a -g` taken while iperf3 ran, files each sample under a category by
its innermost kernel or user function, and prints core-milliseconds per GB for each category
of each path side by side (bench/compare-overlay.sh runs it when PROFILE=1).

    python3 bench/perf_cost.py NAME=SCRIPT_FILE:GBPS:CORES [NAME=...]

CORES is the number of CPUs the samples were taken on (perf samples every CPU at the same rate,
idle ones included), so a category's share of the samples times CORES, divided by the GB/s the
path moved, is the CPU time it cost per GB. The copies are also split by the call that made
them, which names the copy (the container's TCP send, AF_PACKET receive, TAP write, ...)."""
import collections
import sys

# A sample belongs to the first category one of whose substrings occurs in its innermost frame.
CATEGORIES = [
    ("copy", ("copy_to_iter", "copy_from_iter", "memcpy", "memmove", "copy_page", "rep_movs",
              "check_object_size", "check_heap_object", "virt_addr_valid")),
    ("idle", ("safe_halt", "default_idle", "cpu_idle", "poll_idle", "intel_idle")),
    ("wakeup/switch", ("finish_task_switch", "__schedule", "try_to_wake_up", "_raw_spin_unlock_irq",
                       "enqueue_task", "dequeue_task", "pick_next", "update_curr", "select_task_rq",
                       "ttwu", "__switch_to", "switch_mm")),
    ("skb/page memory", ("alloc", "free", "kmem_cache", "page_frag", "put_page", "skb_release",
                         "consume_skb", "folio")),
    ("tcp", ("tcp_", "bbr_", "cubic", "inet_csk")),
    ("udp", ("udp",)),
    ("bridge/vxlan", ("br_", "vxlan", "iptunnel", "udp_tunnel", "nbp_")),
    ("ip", ("ip_", "fib_", "inet_", "rt_", "dst_", "nf_")),
    ("tun", ("tun_",)),
    ("af_packet", ("packet_", "tpacket")),
    ("device/softirq", ("veth", "netif", "dev_", "napi", "process_backlog", "net_rx_action",
                        "validate_xmit", "gso", "skb_mac", "eth_", "handle_softirqs",
                        "bh_enable")),
    ("syscall/poll", ("entry_SYSCALL", "do_syscall", "__x64_sys", "sys_", "msghdr", "iovec",
                      "vfs_", "fdget", "ep_", "epoll", "do_select", "sock_poll", "core_sys_select")),
]
# The calls whose name says which copy a copy sample belongs to.
COPY_CALLERS = ("tcp_sendmsg_locked", "tcp_recvmsg_locked", "packet_recvmsg", "packet_sendmsg",
                "tun_get_user", "tun_put_user", "tun_do_read", "tun_chr_read_iter", "udp_recvmsg",
                "tpacket_rcv", "skb_copy_bits")


def samples(path):
    """Yields the call chain (innermost frame first) of each sample in a `perf script` file."""
    chain = None
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                if chain is not None:
                    yield chain
                chain = None
            elif not line.startswith("\t"):
                chain = []
            elif chain is not None:
                parts = line.split(None, 1)
                if len(parts) > 1:
                    chain.append(parts[1].strip())
    if chain is not None:
        yield chain


def category(frame):
    for name, keys in CATEGORIES:
        if any(k in frame for k in keys):
            return name
    return "other"


def costs(path, gbps, cores):
    """Core-ms per GB by category, and by copy caller; None when the file holds no sample."""
    cats, copies, total = collections.Counter(), collections.Counter(), 0
    for chain in samples(path):
        total += 1
        leaf = chain[0] if chain else "?"
        c = category(leaf)
        cats[c] += 1
        if c == "copy":
            copies[next((f for f in chain if f in COPY_CALLERS), "other copy")] += 1
    if total == 0 or gbps <= 0:
        return None
    per_gb = 1000.0 * cores / (gbps / 8.0) / total  # core-ms per GB for one sample's share
    return ({k: v * per_gb for k, v in cats.items()},
            {k: v * per_gb for k, v in copies.items()})


def main(args):
    paths = []
    for a in args:
        name, spec = a.split("=", 1)
        path, gbps, cores = spec.rsplit(":", 2)
        try:
            r = costs(path, float(gbps), int(cores))
        except OSError as e:
            print(f"{name}: cannot read {path}: {e.strerror}")
            return 1
        if r is None:
            print(f"{name}: no samples")
            return 1
        paths.append((name, r))
    names = [n for n, _ in paths]
    print("  CPU per GB moved (core-ms/GB), from perf samples:")
    print("  " + f"{'category':<18}" + "".join(f"{n:>12}" for n in names))
    keys = sorted({k for _, (c, _) in paths for k in c}, key=lambda k: -paths[-1][1][0].get(k, 0))
    for k in keys + ["busy"]:
        if k == "idle":
            continue
        row = []
        for _, (c, _) in paths:
            row.append(sum(v for kk, v in c.items() if kk != "idle") if k == "busy" else c.get(k, 0))
        print("  " + f"{k:<18}" + "".join(f"{v:>12.0f}" for v in row))
    for name, (_, copies) in paths:
        top = ", ".join(f"{k} {v:.0f}" for k, v in sorted(copies.items(), key=lambda kv: -kv[1]))
        print(f"  copies of {name} by call: {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
