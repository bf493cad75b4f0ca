"""Fault injection over a real network: two Linux network namespaces and a veth pair.

The edge and the cloud each get a namespace, joined by one veth pair with a
private /30 that exists inside those namespaces only, so no test traffic can
leave them. Every impairment says which mechanism it used (:attr:`Link.mechanisms`):

========  ==========================================  ===================================
fault     where the kernel has ``sch_netem``          otherwise (these machines)
========  ==========================================  ===================================
delay     ``tc qdisc netem delay D J`` on each end     :class:`DelayProxy`: a TCP proxy in
          (per packet)                                 the cloud namespace delaying each
                                                       chunk by U(D-J, D+J) per direction,
                                                       order kept per connection (toxiproxy)
loss      ``netem loss P%`` on each end                nftables in the edge namespace:
                                                       ``numgen random mod 100 < P drop``
                                                       on the veth, both directions
rate      ``tc qdisc tbf`` (child of netem)            ``tc qdisc tbf`` on each end
cut       nftables drop-all on the veth (or ``ip link set down``)
========  ==========================================  ===================================

Loss, rate and cut act on real packets of the edge's own TCP connection: drops
are real, and so are TCP's retransmissions and head-of-line stalls. The delay
proxy is the only simulated part: it delays bytes, not packets, and it ends the
edge's TCP connection one hop early (the edge talks to the proxy over the veth,
the proxy to the worker over the cloud namespace's loopback).

    >>> with Link() as link:                                         # doctest: +SKIP
    ...     proxy = link.start_proxy(6555, "127.0.0.1:5555")         # edge dials link.cloud_ip:6555
    ...     worker = subprocess.Popen(link.exec_argv(link.cloud_ns, ["jetsplit", "cloud", "serve", ...]))
    ...     link.impair(delay_ms=80, jitter_ms=20, loss_pct=5)
    ...     link.cut(); link.restore()

By hand (as root): ``python tests/system/netns.py up --delay-ms 80 --jitter-ms 20
--loss-pct 5`` (see docs/faults.md). This file imports only the standard library,
because it also runs as the proxy process inside a namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

__all__ = ["DelayProxy", "Link", "cleanup_stale", "probe_netem", "unavailable_reason"]

#: Every namespace and interface this harness makes starts with this, then the
#: pid of the process that made it: stale ones (their maker is dead) are removed.
PREFIX = "jsfault"
_NS_RE = re.compile(rf"^{PREFIX}-(\d+)-(\d+)-[ec]$")
_IF_RE = re.compile(r"^jsf(\d+)x(\d+)[ec]$")
_TABLE = "jsfault"
_CMD_TIMEOUT_S = 15.0
_counter = 0


def _run(argv: Sequence[str], check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run one command with a timeout; on failure raise with its stderr (the
    exact error text is what an operator needs)."""
    proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=_CMD_TIMEOUT_S)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def unavailable_reason() -> str | None:
    """Why namespaces with nftables cannot be made here, or None if they can."""
    if sys.platform != "linux":
        return f"network namespaces need Linux, this is {sys.platform}"
    if os.geteuid() != 0:
        return "network namespaces need root (run as root, or in a privileged container)"
    for tool, package in (("ip", "iproute2"), ("tc", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"`{tool}` not found (install {package}; tests/system/netns_setup.sh does)"
    name = f"{PREFIX}-{os.getpid()}-probe-e"
    proc = _run(["ip", "netns", "add", name], check=False)
    if proc.returncode != 0:
        return f"cannot create a network namespace: {proc.stderr.strip()}"
    try:
        nft = _run(["ip", "netns", "exec", name, "nft", "list", "ruleset"], check=False)
        if nft.returncode != 0:
            return f"nftables does not work in a namespace: {nft.stderr.strip()}"
    finally:
        _run(["ip", "netns", "del", name], check=False)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale() -> list[str]:
    """Delete namespaces and veths this harness made in processes that are gone
    (a run killed before its ``finally``); return their names."""
    removed: list[str] = []
    listing = _run(["ip", "netns", "list"], check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        m = _NS_RE.match(name)
        if m and not _alive(int(m.group(1))):
            _run(["ip", "netns", "del", name], check=False)
            removed.append(name)
    links = _run(["ip", "-o", "link", "show"], check=False).stdout
    for line in links.splitlines():
        parts = line.split(":")
        name = parts[1].strip().split("@")[0] if len(parts) > 1 else ""
        m = _IF_RE.match(name)
        if m and not _alive(int(m.group(1))):
            _run(["ip", "link", "del", name], check=False)
            removed.append(name)
    return removed


def probe_netem(ns: str, dev: str) -> str | None:
    """None if ``tc qdisc ... netem`` works on ``dev`` in ``ns``, else tc's error text."""
    proc = _run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "handle", "1:",
                 "netem", "delay", "1ms"], check=False)
    if proc.returncode != 0:
        return proc.stderr.strip() or f"exit {proc.returncode}"
    _run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root"], check=False)
    return None


@dataclass
class _Impairment:
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    rate_kbit: float | None = None
    cut: bool = False


@dataclass
class Link:
    """Two namespaces (``edge_ns``, ``cloud_ns``) joined by a veth pair; a context
    manager that deletes them (and everything running in them loses its network)
    on exit. ``mechanisms`` maps each impairment applied to how it was done."""

    subnet: str = "10.254.0"
    edge_ns: str = ""
    cloud_ns: str = ""
    edge_if: str = ""
    cloud_if: str = ""
    mechanisms: dict[str, str] = field(default_factory=dict)
    netem_error: str | None = None  # tc's error text when netem is missing, None when present
    _state: _Impairment = field(default_factory=_Impairment)
    _proxies: list[DelayProxy] = field(default_factory=list)

    @property
    def edge_ip(self) -> str:
        return f"{self.subnet}.1"

    @property
    def cloud_ip(self) -> str:
        return f"{self.subnet}.2"

    # -- lifecycle -----------------------------------------------------------------
    def __enter__(self) -> Link:
        global _counter
        _counter += 1
        cleanup_stale()
        pid, n = os.getpid(), _counter
        self.edge_ns, self.cloud_ns = f"{PREFIX}-{pid}-{n}-e", f"{PREFIX}-{pid}-{n}-c"
        # Interface names are limited to 15 bytes: jsf + pid + x + n + side.
        self.edge_if, self.cloud_if = f"jsf{pid}x{n}e", f"jsf{pid}x{n}c"
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _create(self) -> None:
        for ns in (self.edge_ns, self.cloud_ns):
            _run(["ip", "netns", "add", ns])
        _run(["ip", "link", "add", self.edge_if, "type", "veth", "peer", "name", self.cloud_if])
        for ns, dev, ip in ((self.edge_ns, self.edge_if, self.edge_ip), (self.cloud_ns, self.cloud_if, self.cloud_ip)):
            _run(["ip", "link", "set", dev, "netns", ns])
            _run(["ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", dev])
            _run(["ip", "-n", ns, "link", "set", dev, "up"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        self.netem_error = probe_netem(self.edge_ns, self.edge_if)
        self._apply()

    def close(self) -> None:
        """Stop the proxies and delete both namespaces (the veth pair goes with them)."""
        for proxy in self._proxies:
            proxy.stop()
        self._proxies.clear()
        for ns in (self.edge_ns, self.cloud_ns):
            if ns:
                _run(["ip", "netns", "del", ns], check=False)
        if self.edge_if:
            _run(["ip", "link", "del", self.edge_if], check=False)  # only if never moved

    # -- running things inside -----------------------------------------------------
    def exec_argv(self, ns: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside ``ns``. ``ip netns exec`` execs in place, so the
        process keeps the pid a caller signals."""
        return ["ip", "netns", "exec", ns, *argv]

    def run(self, ns: str, argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(self.exec_argv(ns, argv), check=check)

    def start_proxy(self, listen_port: int, target: str, seed: int | None = None) -> DelayProxy:
        """A :class:`DelayProxy` in the cloud namespace on ``cloud_ip:listen_port``
        forwarding to ``target`` (host:port, seen from the cloud namespace). It
        passes bytes through undelayed until :meth:`impair` asks for a delay
        that netem cannot give."""
        proxy = DelayProxy(self.exec_argv(self.cloud_ns, [sys.executable, os.path.abspath(__file__), "proxy",
                                                          "--listen", f"{self.cloud_ip}:{listen_port}",
                                                          "--target", target,
                                                          *(["--seed", str(seed)] if seed is not None else [])]))
        self._proxies.append(proxy)
        if self._state.delay_ms and self.netem_error is not None:
            proxy.set_delay(self._state.delay_ms, self._state.jitter_ms)
        return proxy

    # -- impairments ---------------------------------------------------------------
    def impair(self, delay_ms: float | None = None, jitter_ms: float | None = None, loss_pct: float | None = None,
               rate_kbit: float | None = None) -> dict[str, str]:
        """Set the named impairments (others keep their value); return the mechanisms."""
        s = self._state
        if delay_ms is not None:
            s.delay_ms = float(delay_ms)
        if jitter_ms is not None:
            s.jitter_ms = float(jitter_ms)
        if loss_pct is not None:
            s.loss_pct = float(loss_pct)
        if rate_kbit is not None:
            s.rate_kbit = float(rate_kbit)
        if s.jitter_ms > s.delay_ms:
            raise ValueError(f"jitter {s.jitter_ms} ms exceeds the delay {s.delay_ms} ms")
        self._apply()
        return dict(self.mechanisms)

    def clear(self) -> None:
        """No delay, no loss, no rate limit, link up."""
        self._state = _Impairment()
        self._apply()

    def cut(self, how: str = "drop") -> str:
        """Cut the link: ``drop`` (nftables drops every packet on the veth, as a cable
        pulled far away: connections stall, nothing is reset) or ``down`` (the
        edge's veth goes down: sends fail at once, the peer sees nothing)."""
        if how == "down":
            _run(["ip", "-n", self.edge_ns, "link", "set", self.edge_if, "down"])
            self.mechanisms["cut"] = f"ip link set {self.edge_if} down (edge namespace)"
        elif how == "drop":
            self._state.cut = True
            self._apply()
        else:
            raise ValueError(f"cut: expected 'drop' or 'down', got {how!r}")
        return self.mechanisms["cut"]

    def restore(self) -> None:
        """Undo :meth:`cut` (either kind); other impairments stay."""
        self._state.cut = False
        _run(["ip", "-n", self.edge_ns, "link", "set", self.edge_if, "up"])
        self._apply()

    def dropped_packets(self) -> int:
        """Packets the loss rules have dropped since the impairments were last set."""
        table = self.run(self.edge_ns, ["nft", "list", "table", "inet", _TABLE]).stdout
        return sum(int(n) for n in re.findall(r"counter packets (\d+)", table))

    def _apply(self) -> None:
        s = self._state
        self._apply_nft(s)
        self._apply_tc(s)
        if self.netem_error is not None:
            for proxy in self._proxies:
                proxy.set_delay(s.delay_ms, s.jitter_ms)
            if s.delay_ms or s.jitter_ms:
                self.mechanisms["delay"] = (f"asyncio TCP proxy in {self.cloud_ns}, each chunk delayed "
                                            f"U({s.delay_ms - s.jitter_ms:g}, {s.delay_ms + s.jitter_ms:g}) ms "
                                            "per direction, order kept (netem unavailable)")

    def _apply_nft(self, s: _Impairment) -> None:
        # One atomic transaction: make the table if missing, drop it, write it anew.
        rules_in: list[str] = []
        rules_out: list[str] = []
        if s.cut:
            rules_in.append(f'iifname "{self.edge_if}" drop')
            rules_out.append(f'oifname "{self.edge_if}" drop')
            self.mechanisms["cut"] = f"nftables drop-all on {self.edge_if} (edge namespace, both directions)"
        if s.loss_pct and self.netem_error is not None:
            pct = int(round(s.loss_pct))
            rules_in.append(f'iifname "{self.edge_if}" numgen random mod 100 < {pct} counter drop')
            rules_out.append(f'oifname "{self.edge_if}" numgen random mod 100 < {pct} counter drop')
            self.mechanisms["loss"] = (f"nftables `numgen random mod 100 < {pct} drop` on {self.edge_if} "
                                       "(edge namespace, both directions)")
        script = "\n".join([
            f"table inet {_TABLE}",
            f"delete table inet {_TABLE}",
            f"table inet {_TABLE} {{",
            "  chain in { type filter hook input priority 0; policy accept;",
            *(f"    {r}" for r in rules_in),
            "  }",
            "  chain out { type filter hook output priority 0; policy accept;",
            *(f"    {r}" for r in rules_out),
            "  }",
            "}",
        ]) + "\n"
        _run(self.exec_argv(self.edge_ns, ["nft", "-f", "-"]), stdin=script)

    def _apply_tc(self, s: _Impairment) -> None:
        for ns, dev in ((self.edge_ns, self.edge_if), (self.cloud_ns, self.cloud_if)):
            tc = ["ip", "netns", "exec", ns, "tc", "qdisc"]
            _run([*tc, "del", "dev", dev, "root"], check=False)  # fails when there is none
            parent = ["root"]
            if self.netem_error is None and (s.delay_ms or s.loss_pct):
                netem = ["netem"]
                if s.delay_ms:
                    netem += ["delay", f"{s.delay_ms}ms", f"{s.jitter_ms}ms"]
                if s.loss_pct:
                    netem += ["loss", f"{s.loss_pct}%"]
                _run([*tc, "add", "dev", dev, "root", "handle", "1:", *netem])
                parent = ["parent", "1:1"]
                if s.delay_ms:
                    self.mechanisms["delay"] = f"tc netem delay {s.delay_ms:g}ms {s.jitter_ms:g}ms on both veth ends"
                if s.loss_pct:
                    self.mechanisms["loss"] = f"tc netem loss {s.loss_pct:g}% on both veth ends"
            if s.rate_kbit:
                # Burst: at least one MTU and ~10 ms of the rate; queue up to 100 ms.
                burst = max(1600, int(s.rate_kbit * 1000 / 8 / 100))
                _run([*tc, "add", "dev", dev, *parent, "tbf", "rate", f"{s.rate_kbit:g}kbit",
                      "burst", str(burst), "latency", "100ms"])
                self.mechanisms["rate"] = f"tc tbf rate {s.rate_kbit:g}kbit burst {burst}B on both veth ends"


class DelayProxy:
    """The delay proxy as a process (``netns.py proxy ...``) driven over its stdin.

    Closing its stdin ends it: it cannot outlive the test that started it.
    """

    def __init__(self, argv: Sequence[str], timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        # Imported here: this file also runs alone as the proxy process itself.
        from tests.support.daemons import Lines

        self._lines = Lines(self.proc.stdout)  # waiting for a line keeps its timeout
        self.listening = self._expect("listening", timeout)

    def _expect(self, word: str, timeout: float) -> str:
        try:
            line = self._lines.expect(word, timeout)
        except TimeoutError:
            raise TimeoutError(f"delay proxy: no {word!r} line within {timeout} s") from None
        if line is None:
            self.proc.wait(5)
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"delay proxy exited {self.proc.returncode}: {err}")
        return line.strip()

    def set_delay(self, delay_ms: float, jitter_ms: float) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"delay_ms": delay_ms, "jitter_ms": jitter_ms}) + "\n")
        self.proc.stdin.flush()
        self._expect("ok", 5.0)

    def stop(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# -- the proxy process ---------------------------------------------------------------

class _ProxyState:
    def __init__(self, seed: int | None) -> None:
        self.delay_s = 0.0
        self.jitter_s = 0.0
        self.rng = random.Random(seed)
        self.connections = 0

    def release_after(self) -> float:
        if self.delay_s <= 0:
            return 0.0
        return max(0.0, self.rng.uniform(self.delay_s - self.jitter_s, self.delay_s + self.jitter_s))


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, state: _ProxyState) -> None:
    """Copy ``src`` to ``dst``, each chunk released at arrival + its delay, never
    before the chunk ahead of it (a byte stream cannot reorder)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

    async def reader() -> None:
        last = 0.0
        try:
            while chunk := await src.read(65536):  # ends at EOF
                last = max(loop.time() + state.release_after(), last)
                queue.put_nowait((last, chunk))
        finally:
            queue.put_nowait(None)

    async def writer() -> None:
        try:
            while (item := await queue.get()) is not None:  # ends at the reader's marker
                release, chunk = item
                wait = release - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                dst.write(chunk)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()
        except (ConnectionError, OSError):
            pass

    read_task = asyncio.ensure_future(reader())
    try:
        await writer()
    finally:
        read_task.cancel()


async def _serve(listen: str, target: str, state: _ProxyState, max_seconds: float) -> None:
    lhost, lport = listen.rsplit(":", 1)
    thost, tport = target.rsplit(":", 1)

    async def handle(down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            up_r, up_w = await asyncio.wait_for(asyncio.open_connection(thost, int(tport)), timeout=5.0)
        except (OSError, asyncio.TimeoutError):
            down_w.close()  # the edge sees the connection end and reconnects
            return
        try:
            await asyncio.gather(_pipe(down_r, up_w, state), _pipe(up_r, down_w, state), return_exceptions=True)
        finally:
            for w in (up_w, down_w):
                w.close()

    server = await asyncio.start_server(handle, lhost, int(lport))
    print(f"listening {listen} -> {target}", flush=True)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    end = loop.time() + max_seconds
    async with server:
        # Commands until the parent closes stdin, or the time limit.
        while (left := end - loop.time()) > 0:
            try:
                line = await asyncio.wait_for(stdin.readline(), timeout=left)
            except asyncio.TimeoutError:
                break
            if not line:
                break
            cmd = json.loads(line)
            state.delay_s = float(cmd.get("delay_ms", 0.0)) / 1000.0
            state.jitter_s = float(cmd.get("jitter_ms", 0.0)) / 1000.0
            print(f"ok delay={state.delay_s * 1000:g}ms jitter={state.jitter_s * 1000:g}ms "
                  f"connections={state.connections}", flush=True)


def _proxy_main(args: argparse.Namespace) -> int:
    state = _ProxyState(args.seed)
    state.delay_s, state.jitter_s = args.delay_ms / 1000.0, args.jitter_ms / 1000.0
    asyncio.run(_serve(args.listen, args.target, state, args.max_seconds))
    return 0


def _up_main(args: argparse.Namespace) -> int:
    reason = unavailable_reason()
    if reason is not None:
        print(f"cannot make namespaces: {reason}", file=sys.stderr)
        return 1
    with Link() as link:
        proxy = link.start_proxy(args.proxy_port, f"127.0.0.1:{args.worker_port}")
        link.impair(delay_ms=args.delay_ms, jitter_ms=args.jitter_ms, loss_pct=args.loss_pct,
                    rate_kbit=args.rate_kbit)
        print(json.dumps({
            "edge_ns": link.edge_ns, "cloud_ns": link.cloud_ns, "edge_ip": link.edge_ip,
            "cloud_ip": link.cloud_ip, "proxy": proxy.listening, "netem_error": link.netem_error,
            "mechanisms": link.mechanisms,
            "worker": " ".join(link.exec_argv(link.cloud_ns, ["jetsplit", "cloud", "serve", "--bundle", "DIR",
                                                             "--bind", f"tcp://127.0.0.1:{args.worker_port}"])),
            "edge": " ".join(link.exec_argv(link.edge_ns, ["jetsplit", "edge", "run", "--bundle", "DIR",
                                                          "--cloud", f"tcp://{link.cloud_ip}:{args.proxy_port}", "--insecure",
                                                          "--source", "DIR"])),
        }, indent=2), flush=True)
        print(f"holding for {args.hold_s:g} s (Ctrl-C to tear down)", file=sys.stderr, flush=True)
        try:
            time.sleep(args.hold_s)
        except KeyboardInterrupt:
            pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="netns.py", description=__doc__.split("\n")[0] if __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True)
    px = sub.add_parser("proxy", help="run the delay proxy (the harness starts it in the cloud namespace)")
    px.add_argument("--listen", required=True)
    px.add_argument("--target", required=True)
    px.add_argument("--delay-ms", type=float, default=0.0)
    px.add_argument("--jitter-ms", type=float, default=0.0)
    px.add_argument("--seed", type=int)
    px.add_argument("--max-seconds", type=float, default=3600.0)
    up = sub.add_parser("up", help="make the namespaces, impair the link, hold, tear down")
    up.add_argument("--delay-ms", type=float, default=0.0)
    up.add_argument("--jitter-ms", type=float, default=0.0)
    up.add_argument("--loss-pct", type=float, default=0.0)
    up.add_argument("--rate-kbit", type=float)
    up.add_argument("--worker-port", type=int, default=5555)
    up.add_argument("--proxy-port", type=int, default=6555)
    up.add_argument("--hold-s", type=float, default=600.0)
    sub.add_parser("cleanup", help="delete namespaces and veths left by dead runs")
    args = p.parse_args(argv)
    if args.command == "proxy":
        return _proxy_main(args)
    if args.command == "up":
        return _up_main(args)
    for name in cleanup_stale():
        print(f"removed {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
