#!/usr/bin/env python3
"""Host side of the virtio-net guest tests (tests/t-virtio-net.sh). Every address it binds to or
sends to is given on its command line; the scripts run it inside network namespaces they
create, so nothing leaves the machine.

  serve [--dns ADDR:PORT --name NAME=IP ...] [--udp-echo ADDR:PORT] [--tcp-listen ADDR:PORT]
        [--ready FILE] [--log FILE]
      A DNS responder (A records for the names given, NXDOMAIN for others), a UDP echo server
      (answers b"echo:" + payload) and a TCP listener (accepts, sends b"host-hello\\n", closes),
      until killed. Touches FILE once every socket is bound.
  udp-probe ADDR PORT COUNT     COUNT datagrams of growing size through a hostfwd=udp; each must
                                come back as b"guest:" + payload.
  tcp-accept ADDR PORT          connect through a hostfwd=tcp; the guest's greeting must arrive.
  tcp-refuse ADDR PORT          connect through a hostfwd=tcp; EOF or a reset must come promptly
                                (the guest answered RST), not a timeout.
  send ADDR PORT TEXT           one UDP datagram (e.g. DONE to end a guest's serving loop).
  blast ADDR PORT SIZE COUNT    COUNT UDP datagrams of SIZE bytes (no check: the guest counts).
  ping ADDR SIZE...             ICMP echo (raw socket, root) with each payload size; each reply
                                must carry the same payload.
Exit status 0 when every check passed; one line per check on stdout.
"""
import os
import select
import socket
import struct
import sys
import time

GREETING = b"kvmbox-guest-hello\n"


def addr(s):
    host, port = s.rsplit(':', 1)
    return host, int(port)


def log(msg, f=None):
    print(msg, file=f or sys.stderr, flush=True)


# ---- DNS (RFC 1035) ----

def dns_name(msg, i):
    """Reads an uncompressed question name at i; returns (name, next index)."""
    labels = []
    while True:
        n = msg[i]
        if n == 0:
            return '.'.join(labels), i + 1
        if n & 0xc0:
            raise ValueError('compressed question name')
        labels.append(msg[i + 1:i + 1 + n].decode('ascii', 'replace'))
        i += 1 + n


def dns_answer(query, names):
    qid, flags, qd = struct.unpack('>HHH', query[:6])
    if flags & 0x8000 or qd != 1:
        return None, None
    name, end = dns_name(query, 12)
    qtype, qclass = struct.unpack('>HH', query[end:end + 4])
    question = query[12:end + 4]
    ip = names.get(name.lower().rstrip('.'))
    rd = flags & 0x0100
    if ip is None or qclass != 1:
        return struct.pack('>HHHHHH', qid, 0x8180 | rd | 3, 1, 0, 0, 0) + question, name  # NXDOMAIN
    if qtype != 1:
        return struct.pack('>HHHHHH', qid, 0x8180 | rd, 1, 0, 0, 0) + question, name   # no A asked
    rr = struct.pack('>HHHIH', 0xc00c, 1, 1, 60, 4) + socket.inet_aton(ip)
    return struct.pack('>HHHHHH', qid, 0x8180 | rd, 1, 1, 0, 0) + question + rr, name


def serve(args):
    names, dns, echo, listen, ready, logf = {}, None, None, None, None, None
    it = iter(args)
    for a in it:
        if a == '--dns':
            dns = addr(next(it))
        elif a == '--name':
            n, ip = next(it).split('=', 1)
            names[n.lower().rstrip('.')] = ip
        elif a == '--udp-echo':
            echo = addr(next(it))
        elif a == '--tcp-listen':
            listen = addr(next(it))
        elif a == '--ready':
            ready = next(it)
        elif a == '--log':
            logf = open(next(it), 'a', buffering=1)
        else:
            sys.exit(f'serve: unknown option {a}')
    socks = {}
    if dns:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(dns)
        socks[s] = 'dns'
    if echo:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(echo)
        socks[s] = 'echo'
    if listen:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(listen)
        s.listen(8)
        socks[s] = 'listen'
    if ready:
        open(ready, 'w').close()
    while True:
        r, _, _ = select.select(list(socks), [], [])
        for s in r:
            kind = socks[s]
            if kind == 'listen':
                c, peer = s.accept()
                log(f'tcp: connection from {peer[0]}:{peer[1]}', logf)
                try:
                    c.sendall(b'host-hello\n')
                except OSError:
                    pass
                c.close()
                continue
            data, peer = s.recvfrom(65536)
            if kind == 'echo':
                log(f'udp echo: {len(data)} bytes from {peer[0]}:{peer[1]}', logf)
                s.sendto(b'echo:' + data, peer)
            else:
                try:
                    reply, name = dns_answer(data, names)
                except (ValueError, IndexError, struct.error):
                    reply, name = None, '?'
                log(f'dns: query for {name} from {peer[0]}:{peer[1]}: {"answered" if reply else "ignored"}', logf)
                if reply:
                    s.sendto(reply, peer)


# ---- probes ----

def result(ok, msg):
    print(f"{'ok' if ok else 'FAILED'}: {msg}", flush=True)
    return ok


def udp_probe(host, port, count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    good = True
    for i in range(int(count)):
        size = [1, 64, 500, 1400][i % 4] + i
        payload = bytes((i * 31 + k * 7) & 0xff for k in range(size))
        got = None
        for _ in range(3):  # UDP: the guest may drop one while busy
            s.sendto(payload, (host, int(port)))
            try:
                got = s.recv(65536)
                break
            except socket.timeout:
                continue
        good &= result(got == b'guest:' + payload,
                       f'udp {size} bytes to {host}:{port} echoed by the guest'
                       + ('' if got == b'guest:' + payload else f' (got {None if got is None else len(got)} bytes)'))
    return good


def tcp_connect(host, port, timeout):
    s = socket.create_connection((host, int(port)), timeout=timeout)
    s.settimeout(timeout)
    return s


def tcp_accept(host, port):
    t0 = time.monotonic()
    try:
        s = tcp_connect(host, port, 10)
        data = b''
        while not data.endswith(b'\n') and len(data) < 100:
            chunk = s.recv(100)
            if not chunk:
                break
            data += chunk
        s.close()
    except OSError as e:
        return result(False, f'tcp connect to {host}:{port}: {e}')
    return result(data == GREETING, f'tcp {host}:{port}: the guest accepted and greeted '
                  f'({data!r} after {time.monotonic() - t0:.2f} s)')


def tcp_refuse(host, port):
    t0 = time.monotonic()
    try:
        s = tcp_connect(host, port, 10)
        data = s.recv(100)
        s.close()
        how = 'EOF' if not data else f'data {data!r}'
        ok = not data
    except ConnectionRefusedError:
        how, ok = 'connection refused', True
    except ConnectionResetError:
        how, ok = 'connection reset', True
    except socket.timeout:
        how, ok = 'TIMEOUT (the guest never answered)', False
    except OSError as e:
        how, ok = str(e), False
    return result(ok, f'tcp {host}:{port}: refused at the guest: {how} after {time.monotonic() - t0:.2f} s')


def send(host, port, text):
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(text.encode(), (host, int(port)))
    return True


def blast(host, port, size, count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(int(count)):
        s.sendto(bytes((i + k) & 0xff for k in range(int(size))), (host, int(port)))
        time.sleep(0.05)
    return result(True, f'sent {count} datagrams of {size} bytes to {host}:{port}')


def csum(b):
    if len(b) % 2:
        b += b'\0'
    s = sum(struct.unpack(f'!{len(b) // 2}H', b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def ping(host, sizes):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xffff
    good, n = True, 0
    for seq, size in enumerate(int(x) for x in sizes):
        payload = bytes((seq + k * 3) & 0xff for k in range(size))
        hdr = struct.pack('!BBHHH', 8, 0, 0, ident, seq)
        pkt = struct.pack('!BBHHH', 8, 0, csum(hdr + payload), ident, seq) + payload
        ok, why = False, 'no reply'
        for _ in range(2):
            s.sendto(pkt, (host, 0))
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                r, _, _ = select.select([s], [], [], max(0, deadline - time.monotonic()))
                if not r:
                    break
                data, peer = s.recvfrom(65536)
                ihl = (data[0] & 15) * 4
                icmp = data[ihl:]
                if peer[0] != host or len(icmp) < 8:
                    continue
                t, _, _, i, q = struct.unpack('!BBHHH', icmp[:8])
                if t != 0 or i != ident or q != seq:
                    continue
                ok = icmp[8:] == payload and csum(icmp) == 0
                why = 'payload intact' if ok else f'reply of {len(icmp) - 8} bytes differs'
                break
            if ok:
                break
        n += ok
        if not ok:
            result(False, f'ping {host} with {size} bytes: {why}')
        good &= ok
    result(good, f'ping {host}: {n} of {len(sizes)} sizes ({min(map(int, sizes))}-{max(map(int, sizes))} bytes) '
                 f'answered with the payload intact')
    return good


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == 'serve':
        serve(args)
        return
    fn = {'udp-probe': udp_probe, 'tcp-accept': tcp_accept, 'tcp-refuse': tcp_refuse, 'send': send,
          'blast': blast}.get(cmd)
    if cmd == 'ping':
        ok = ping(args[0], args[1:])
    elif fn:
        ok = fn(*args)
    else:
        sys.exit(f'unknown command {cmd}\n{__doc__}')
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
