/* virtio-net behind a user-mode NAT (libslirp: kvmbox --net user, QEMU -netdev user).
 *
 * 1. The NIC: MAC as mac= says (if given), link up, MTU.
 * 2. DHCP: the lease must be expect_ip (default 10.0.2.15), router expect_gw (10.0.2.2), DNS
 *    expect_dns (10.0.2.3). The gateway answers ARP and ping.
 * 3. DNS: an A query for dns_name through the NAT's DNS address must give dns_expect (the
 *    host runs its own resolver: tests/t-virtio-net.sh points resolv.conf at a local one).
 * 4. UDP to the host: datagrams of 16, 512 and 1472 bytes to 10.0.2.2:udp_host_port (the
 *    NAT sends them from the host to 127.0.0.1) must come back from the host's echo server
 *    as "echo:" + the payload.
 * 5. TCP to the host: a SYN to 10.0.2.2:tcp_host_port (a listening socket on the host)
 *    must be answered by a SYN-ACK, one to tcp_host_closed (nothing listening) by a RST.
 *    libslirp does a non-blocking connect() on the host when the guest's SYN arrives and
 *    answers SYN-ACK only once that connect succeeded, RST when it was refused.
 * 6. Serving the host through hostfwd (after the line "READY serve ..."): datagrams to
 *    udp_echo_port are answered with "guest:" + payload; a SYN to tcp_port is accepted
 *    (SYN-ACK, then the greeting "kvmbox-guest-hello\n" and a FIN once the handshake
 *    completes); a SYN to tcp_rst_port is refused with RST. With hostfwd=tcp libslirp listens
 *    on the host and the host's connect() succeeds at once, before the guest has seen anything
 *    (the host kernel completes that handshake); libslirp then sends its own SYN to the
 *    guest. So the host cannot tell accept from refuse by connect(): it reads. The greeting
 *    arrives when the guest accepted; EOF or a reset comes promptly when the guest answered
 *    RST (libslirp drops the connection and closes the host socket); a guest that never
 *    answered leaves the host read hanging until libslirp gives up, minutes later. Serving
 *    ends with a datagram "DONE" on udp_echo_port, or after serve_secs (default 60).
 *    Then: at least udp_expect datagrams echoed, tcp_expect connections accepted,
 *    tcp_rst_expect refused (defaults 0).
 * 7. rounds=N (default 0): N rounds, round_ms apart (default 300), of a new DHCP lease and a
 *    ping to the gateway, each ending with "NETROUND k ok". Made to be saved and restored in
 *    between (tests/t-savestate.sh): each round first reads the MAC from the config space
 *    again ("MAC now ..." when it changed: a copy restored under another name), and uses it.
 *    step=1: after each round but the last, wait (answering ARP and ping) for a byte on COM1
 *    before the next (at most 600 s), so the host decides when the next round starts.
 * Every port option is 0 (skip) by default. NIC options: see vnet_setup(). */
#include "net.h"

#define GREETING "kvmbox-guest-hello\n"
#define MAX_CONN 8

static struct vnet nic;
static struct netif nif;
static uint8_t buf[1600];

struct conn {
    uint32_t peer, our_seq, their_next;
    uint16_t port, lport;
    bool used, established;
};
static struct conn conns[MAX_CONN];

static uint32_t arg_ip(const char *key, const char *dflt)
{
    char s[20];
    uint32_t ip = 0;
    const char *v = arg_str(key, s, sizeof(s), dflt);
    if (v && !ip_parse(v, &ip))
        fail("%s=%s is not an IPv4 address", key, v);
    return ip;
}

static void check_nic(void)
{
    char want[24];
    uint8_t mac[6];
    if (arg_str("mac", want, sizeof(want), NULL)) {
        bool ok = mac_parse(want, mac) && !memcmp(mac, nic.mac, 6);
        check(ok, "MAC in the config space is %s", want);
    }
    if (virtio_has(&nic.v, VIRTIO_NET_F_STATUS))
        check(nic.status & VIRTIO_NET_S_LINK_UP, "link is up (status %x)", nic.status);
    check(nic.mtu >= 576 && nic.mtu <= VNET_FRAME_MAX - ETH_HLEN, "MTU %u%s", nic.mtu,
          virtio_has(&nic.v, VIRTIO_NET_F_MTU) ? " (from the device)" : " (default)");
}

static void dhcp(void)
{
    char a[16], b[16], c[16];
    struct dhcp_lease l = { 0 };
    uint32_t eip = arg_ip("expect_ip", "10.0.2.15"), egw = arg_ip("expect_gw", "10.0.2.2");
    uint32_t edns = arg_ip("expect_dns", "10.0.2.3");
    int r = dhcp_run(&nif, &l, 15000000);
    if (r) {
        fail("DHCP: %s", r == -2 ? "NAK" : "no answer within 15 s");
        return;
    }
    printf("DHCP lease: %s router %s dns %s mask %x server %x lease %u s\n", ip_str(l.ip, a),
           ip_str(l.router, b), ip_str(l.dns, c), l.mask, l.server, l.lease_secs);
    check(l.ip == eip && l.router == egw && l.dns == edns && l.mask, "DHCP: address %s, router %s, DNS %s",
          ip_str(l.ip, a), ip_str(l.router, b), ip_str(l.dns, c));
}

static void gateway(void)
{
    uint8_t mac[6];
    char a[16];
    bool ok = net_resolve(&nif, nif.gw, mac, 3000000);
    check(ok, "ARP: gateway %s is at %02x:%02x:%02x:%02x:%02x:%02x", ip_str(nif.gw, a), mac[0], mac[1],
          mac[2], mac[3], mac[4], mac[5]);
    for (unsigned i = 0; i < 64; i++)
        buf[i] = (uint8_t)(i * 7 + 1);
    int r = 0;
    for (unsigned tries = 0; tries < 3 && r != 1; tries++)
        r = net_ping(&nif, nif.gw, 0x4b56, (uint16_t)tries, buf, 64, 1000000);
    check(r == 1, "ICMP: the gateway answers a ping with 64 bytes intact (%d)", r);
}

static void dns(void)
{
    char name[128], a[16], b[16];
    if (!arg_str("dns_name", name, sizeof(name), NULL))
        return;
    uint32_t expect = arg_ip("dns_expect", "0.0.0.0"), got = 0;
    int r = -1;
    for (unsigned tries = 0; tries < 3 && r == -1; tries++)
        r = dns_query_a(&nif, nif.dns, name, &got, 2000000);
    check(r == 0 && got == expect, "DNS: %s is %s through %s (result %d, expected %s)", name, ip_str(got, a),
          ip_str(nif.dns, b), r, ip_str(expect, a));
}

static bool is_udp_to(const struct pkt *p, uint32_t from, uint16_t sport, uint16_t dport)
{
    return p->ip && p->proto == IPPROTO_UDP && p->l4_ok && p->saddr == from && p->sport == sport &&
           p->dport == dport;
}

static void udp_host(void)
{
    static const uint32_t sizes[] = { 16, 512, 1467 }; /* the echo adds 5 bytes: 1467 fills the MTU */
    uint16_t port = (uint16_t)arg_u64("udp_host_port", 0);
    if (!port)
        return;
    for (unsigned k = 0; k < 3; k++) {
        uint32_t n = sizes[k];
        for (uint32_t i = 0; i < n; i++)
            buf[i] = (uint8_t)('a' + (i * 13 + k) % 26);
        int got = 0;
        for (unsigned tries = 0; tries < 3 && !got; tries++) {
            net_send_udp(&nif, nif.gw, (uint16_t)(5000 + k), port, buf, n);
            uint64_t start = clock_us();
            struct pkt p;
            while (!got && clock_us() - start < 2000000) {
                if (net_poll(&nif, &p, 50000) < 0)
                    break;
                if (!is_udp_to(&p, nif.gw, port, (uint16_t)(5000 + k)))
                    continue;
                got = p.data_len == n + 5 && !memcmp(p.data, "echo:", 5) && !memcmp(p.data + 5, buf, n) ? 1
                                                                                                        : -1;
            }
        }
        check(got == 1, "UDP: %u bytes to 10.0.2.2:%u come back from the host's echo server%s", n, port,
              got < 0    ? " (WRONG PAYLOAD)"
              : got == 0 ? " (no answer)"
                         : "");
    }
}

static void tcp_host(void)
{
    uint16_t open = (uint16_t)arg_u64("tcp_host_port", 0), closed = (uint16_t)arg_u64("tcp_host_closed", 0);
    if (open) {
        int r = net_tcp_probe(&nif, nif.gw, open, 41001, 3000000);
        check(r == 1, "TCP: SYN to 10.0.2.2:%u (listening) gets SYN-ACK (%d)", open, r);
    }
    if (closed) {
        int r = net_tcp_probe(&nif, nif.gw, closed, 41002, 3000000);
        check(r == 0, "TCP: SYN to 10.0.2.2:%u (closed) gets RST (%d)", closed, r);
    }
}

static struct conn *find_conn(uint32_t peer, uint16_t port, uint16_t lport)
{
    struct conn *free_one = NULL;
    for (unsigned i = 0; i < MAX_CONN; i++) {
        struct conn *c = &conns[i];
        if (c->used && c->peer == peer && c->port == port && c->lport == lport)
            return c;
        if (!c->used && !free_one)
            free_one = c;
    }
    if (!free_one)
        free_one = &conns[rdtsc() % MAX_CONN];
    *free_one = (struct conn){ .peer = peer, .port = port, .lport = lport, .used = true };
    return free_one;
}

/* A TCP server just big enough for a greeting: SYN -> SYN-ACK; the ACK that completes the
 * handshake -> greeting + FIN; the peer's data and FIN are acknowledged. */
static void tcp_segment(const struct pkt *p, uint16_t lport, uint32_t *accepted)
{
    const uint32_t glen = sizeof(GREETING) - 1;
    if (p->tcp_flags & TCP_RST)
        return;
    struct conn *c = find_conn(p->saddr, p->sport, lport);
    if (p->tcp_flags & TCP_SYN) {
        c->our_seq = (uint32_t)rdtsc() & 0x0fffffff;
        c->their_next = p->tcp_seq + 1;
        c->established = false;
        net_send_tcp(&nif, p->saddr, lport, p->sport, c->our_seq, c->their_next, TCP_SYN | TCP_ACK, NULL, 0);
        return;
    }
    if (!(p->tcp_flags & TCP_ACK))
        return;
    if (!c->established && p->tcp_ack == c->our_seq + 1) {
        c->established = true;
        (*accepted)++;
        net_send_tcp(&nif, p->saddr, lport, p->sport, c->our_seq + 1, c->their_next, TCP_ACK | TCP_PSH,
                     GREETING, glen);
        net_send_tcp(&nif, p->saddr, lport, p->sport, c->our_seq + 1 + glen, c->their_next, TCP_ACK | TCP_FIN,
                     NULL, 0);
    }
    if (p->data_len || (p->tcp_flags & TCP_FIN)) {
        c->their_next = p->tcp_seq + p->data_len + (p->tcp_flags & TCP_FIN ? 1 : 0);
        net_send_tcp(&nif, p->saddr, lport, p->sport, c->our_seq + 2 + glen, c->their_next, TCP_ACK, NULL, 0);
    }
}

static void serve(void)
{
    uint16_t uport = (uint16_t)arg_u64("udp_echo_port", 0), tport = (uint16_t)arg_u64("tcp_port", 0);
    uint16_t rport = (uint16_t)arg_u64("tcp_rst_port", 0);
    if (!uport && !tport && !rport)
        return;
    uint32_t secs = (uint32_t)arg_u64("serve_secs", 60), echoed = 0, accepted = 0, refused = 0;
    bool done = false;
    printf("READY serve udp_echo_port=%u tcp_port=%u tcp_rst_port=%u\n", uport, tport, rport);
    uint64_t start = clock_us();
    struct pkt p;
    while (!done && clock_us() - start < secs * 1000000ull) {
        if (net_poll(&nif, &p, 100000) < 0)
            break;
        if (!p.ip || p.daddr != nif.ip || !p.l4_ok)
            continue;
        if (p.proto == IPPROTO_UDP && uport && p.dport == uport) {
            if (p.data_len == 4 && !memcmp(p.data, "DONE", 4)) {
                done = true;
                continue;
            }
            uint32_t n = p.data_len > sizeof(buf) - 6 ? sizeof(buf) - 6 : p.data_len;
            memcpy(buf, "guest:", 6), memcpy(buf + 6, p.data, n);
            if (net_reply_udp(&nif, &p, buf, n + 6) == 0)
                echoed++;
        } else if (p.proto == IPPROTO_TCP && tport && p.dport == tport) {
            tcp_segment(&p, tport, &accepted);
        } else if (p.proto == IPPROTO_TCP && rport && p.dport == rport && (p.tcp_flags & TCP_SYN) &&
                   !(p.tcp_flags & (TCP_ACK | TCP_RST))) {
            net_send_tcp(&nif, p.saddr, rport, p.sport, 0, p.tcp_seq + 1, TCP_RST | TCP_ACK, NULL, 0);
            refused++;
        }
    }
    printf("serving ended: %s after %u ms; %u datagrams echoed, %u connections accepted, %u refused, "
           "%u ARP and %u ping requests answered\n",
           done ? "DONE received" : "timed out", (uint32_t)((clock_us() - start) / 1000), echoed, accepted,
           refused, nif.arp_answered, nif.ping_answered);
    check(done, "serving: the host ended it with DONE");
    check(echoed >= arg_u64("udp_expect", 0), "serving: %u datagrams echoed (at least %u expected)", echoed,
          (uint32_t)arg_u64("udp_expect", 0));
    check(accepted >= arg_u64("tcp_expect", 0), "serving: %u TCP connections accepted (at least %u expected)",
          accepted, (uint32_t)arg_u64("tcp_expect", 0));
    check(refused >= arg_u64("tcp_rst_expect", 0),
          "serving: %u TCP connections refused (at least %u expected)", refused,
          (uint32_t)arg_u64("tcp_rst_expect", 0));
}

static void print_mac(const char *what, const uint8_t *m)
{
    printf("%s %02x:%02x:%02x:%02x:%02x:%02x\n", what, m[0], m[1], m[2], m[3], m[4], m[5]);
}

/* step=1: the host's go for the next round, a byte on COM1; the NIC is served meanwhile. */
static bool wait_go(void)
{
    uint64_t start = clock_us();
    while (clock_us() - start < 600000000ull) {
        if (serial_can_read()) {
            serial_getc_timeout(1000);
            return true;
        }
        net_serve(&nif, 20000);
    }
    return false;
}

static void rounds(void)
{
    uint64_t n = arg_u64("rounds", 0), gap_ms = arg_u64("round_ms", 300);
    bool step = arg_u64("step", 0) != 0;
    if (!n)
        return;
    print_mac("MAC at start", nic.mac);
    for (uint64_t k = 1; k <= n; k++) {
        uint8_t old[6];
        memcpy(old, nic.mac, 6);
        vnet_read_config(&nic);
        if (memcmp(old, nic.mac, 6)) {
            memcpy(nif.mac, nic.mac, 6);
            print_mac("MAC now", nic.mac);
        }
        nif.ip = nif.gw = nif.dns = nif.mask = 0;
        nif.narp = 0;
        struct dhcp_lease l = { 0 };
        char a[16];
        int r = dhcp_run(&nif, &l, 15000000);
        if (r) {
            fail("round %llu: DHCP: %s", (unsigned long long)k, r == -2 ? "NAK" : "no answer within 15 s");
            return;
        }
        for (unsigned i = 0; i < 64; i++)
            buf[i] = (uint8_t)(i * 5 + (uint8_t)k);
        r = 0;
        for (unsigned tries = 0; tries < 3 && r != 1; tries++)
            r = net_ping(&nif, nif.gw, 0x4b57, (uint16_t)(k * 4 + tries), buf, 64, 1000000);
        if (r != 1) {
            fail("round %llu: the gateway does not answer a ping (%d)", (unsigned long long)k, r);
            return;
        }
        printf("NETROUND %llu ok ip=%s\n", (unsigned long long)k, ip_str(l.ip, a));
        net_serve(&nif, (uint32_t)(gap_ms * 1000));
        if (step && k < n && !wait_go()) {
            fail("round %llu: no byte on COM1 within 600 s to go on", (unsigned long long)k);
            return;
        }
    }
    pass("%llu rounds of DHCP and ping", (unsigned long long)n);
}

void test_main(void)
{
    if (vnet_setup(&nic, 0))
        return;
    net_init(&nif, &nic, 0, 0, 0);
    uint32_t irq0 = irq_count[nic.v.vec_q];
    check_nic();
    dhcp();
    if (!nif.ip)
        return;
    gateway();
    dns();
    udp_host();
    tcp_host();
    serve();
    rounds();
    if (nic.v.msix_n >= 2) {
        unsigned n = net_irq_probe(&nif, nif.gw, 4);
        check(n > 0, "4 pings to the gateway answered, their replies raise MSI-X interrupts (%u; %u in all)",
              n, irq_count[nic.v.vec_q] - irq0);
    }
    check(nic.rx_bad == 0 && nif.bad_frames == 0, "the device's rx entries were well formed (%u bad%s%s)",
          nic.rx_bad, nic.bad_why ? ": " : "", nic.bad_why ? nic.bad_why : "");
    printf("frames: rx %u (%u merged from several buffers) tx %u\n", nic.rx_frames, nic.rx_merged,
           nic.tx_frames);
}
