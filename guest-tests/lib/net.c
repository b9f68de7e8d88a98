/* Ethernet, ARP, IPv4, ICMP echo, UDP, TCP segments, a DHCP client and a DNS A query for test
 * kernels. Written from RFC 826, 791, 792, 768, 793, 1071, 1035, 2131 and 2132. Frames are
 * built straight into the driver's tx slots; received frames are read in place. */
#include "net.h"

const uint8_t eth_broadcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };

/* ---- checksums (RFC 1071) ---- */

uint32_t csum_add(uint32_t acc, const void *p, uint32_t len)
{
    const uint8_t *b = p;
    /* Native (little-endian) 16-bit words: the one's complement sum is byte-order
     * independent, so the result, stored natively, is right in network order too. */
    for (; len >= 2; len -= 2, b += 2) {
        acc += (uint32_t)b[0] | (uint32_t)b[1] << 8;
        if (acc & 0x80000000u)
            acc = (acc & 0xffff) + (acc >> 16);
    }
    if (len)
        acc += b[0];
    return acc;
}

uint16_t csum_fold(uint32_t acc)
{
    while (acc >> 16)
        acc = (acc & 0xffff) + (acc >> 16);
    return (uint16_t)~acc;
}

static void put_csum(uint8_t *field, uint16_t c)
{
    field[0] = (uint8_t)c, field[1] = (uint8_t)(c >> 8); /* native order, see csum_add */
}

static uint32_t pseudo_sum(uint32_t src, uint32_t dst, uint8_t proto, uint32_t len)
{
    uint8_t ph[12];
    put32(ph, src), put32(ph + 4, dst);
    ph[8] = 0, ph[9] = proto;
    put16(ph + 10, (uint16_t)len);
    return csum_add(0, ph, sizeof(ph));
}

/* ---- addresses ---- */

bool ip_parse(const char *s, uint32_t *ip)
{
    uint32_t v = 0;
    for (int part = 0; part < 4; part++) {
        uint32_t x = 0;
        int digits = 0;
        for (; *s >= '0' && *s <= '9' && digits < 4; s++, digits++)
            x = x * 10 + (uint32_t)(*s - '0');
        if (!digits || x > 255 || (part < 3 && *s++ != '.'))
            return false;
        v = v << 8 | x;
    }
    if (*s && *s != ' ')
        return false;
    *ip = v;
    return true;
}

const char *ip_str(uint32_t ip, char *buf)
{
    snprintf(buf, 16, "%u.%u.%u.%u", ip >> 24, ip >> 16 & 255, ip >> 8 & 255, ip & 255);
    return buf;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

bool mac_parse(const char *s, uint8_t mac[6])
{
    for (int i = 0; i < 6; i++) {
        int h = hexval(s[0]), l = h < 0 ? -1 : hexval(s[1]);
        if (l < 0 || (i < 5 && s[2] != ':'))
            return false;
        mac[i] = (uint8_t)(h << 4 | l);
        s += 3;
    }
    return true;
}

/* ---- parsing ---- */

static void parse_l4(struct pkt *p, const uint8_t *l4, uint32_t n)
{
    uint32_t acc;
    switch (p->proto) {
    case IPPROTO_UDP: {
        if (n < UDP_HLEN)
            return;
        uint16_t ulen = get16(l4 + 4);
        if (ulen < UDP_HLEN || ulen > n)
            return;
        p->sport = get16(l4), p->dport = get16(l4 + 2);
        p->data = l4 + UDP_HLEN, p->data_len = ulen - UDP_HLEN;
        if (get16(l4 + 6) == 0) { /* no checksum (IPv4 allows it) */
            p->l4_ok = true;
            return;
        }
        acc = csum_add(pseudo_sum(p->saddr, p->daddr, IPPROTO_UDP, ulen), l4, ulen);
        p->l4_ok = csum_fold(acc) == 0;
        return;
    }
    case IPPROTO_TCP: {
        if (n < TCP_HLEN)
            return;
        uint32_t off = (uint32_t)(l4[12] >> 4) * 4;
        if (off < TCP_HLEN || off > n)
            return;
        p->sport = get16(l4), p->dport = get16(l4 + 2);
        p->tcp_seq = get32(l4 + 4), p->tcp_ack = get32(l4 + 8), p->tcp_flags = l4[13];
        p->data = l4 + off, p->data_len = n - off;
        acc = csum_add(pseudo_sum(p->saddr, p->daddr, IPPROTO_TCP, n), l4, n);
        p->l4_ok = csum_fold(acc) == 0;
        return;
    }
    case IPPROTO_ICMP:
        if (n < ICMP_HLEN)
            return;
        p->icmp_type = l4[0], p->icmp_code = l4[1];
        p->icmp_id = get16(l4 + 4), p->icmp_seq = get16(l4 + 6);
        p->data = l4 + ICMP_HLEN, p->data_len = n - ICMP_HLEN;
        p->l4_ok = csum_fold(csum_add(0, l4, n)) == 0;
        return;
    }
}

bool net_parse(const uint8_t *f, uint32_t len, struct pkt *p)
{
    memset(p, 0, sizeof(*p));
    p->frame = f, p->len = len;
    if (len < ETH_HLEN)
        return false;
    p->dst = f, p->src = f + 6, p->type = get16(f + 12);
    const uint8_t *d = f + ETH_HLEN;
    uint32_t n = len - ETH_HLEN;
    if (p->type == ETH_P_ARP) {
        if (n >= 28 && get16(d) == 1 && get16(d + 2) == ETH_P_IP && d[4] == 6 && d[5] == 4) {
            p->arp_op = get16(d + 6), p->arp_sha = d + 8;
            p->arp_sip = get32(d + 14), p->arp_tip = get32(d + 24);
        }
        return true;
    }
    if (p->type != ETH_P_IP || n < IP_HLEN || d[0] >> 4 != 4)
        return true;
    uint32_t ihl = (uint32_t)(d[0] & 15) * 4, total = get16(d + 2);
    if (ihl < IP_HLEN || ihl > n || total < ihl || total > n || csum_fold(csum_add(0, d, ihl)) != 0)
        return true;
    p->ip = true;
    p->saddr = get32(d + 12), p->daddr = get32(d + 16), p->proto = d[9];
    if (get16(d + 6) & 0x3fff) /* a fragment: the transport header is not (all) here */
        return true;
    parse_l4(p, d + ihl, total - ihl);
    return true;
}

/* ---- the interface, ARP ---- */

void net_init(struct netif *nif, struct vnet *nic, uint32_t ip, uint32_t mask, uint32_t gw)
{
    memset(nif, 0, sizeof(*nif));
    nif->nic = nic;
    memcpy(nif->mac, nic->mac, 6);
    nif->ip = ip, nif->mask = mask, nif->gw = gw;
    nif->answer_arp = nif->answer_ping = true;
    nif->offload_tx_csum = virtio_has(&nic->v, VIRTIO_NET_F_CSUM);
    nif->ip_id = (uint16_t)rdtsc();
}

const uint8_t *net_arp_lookup(const struct netif *nif, uint32_t ip)
{
    for (unsigned i = 0; i < nif->narp; i++)
        if (nif->arp[i].ip == ip)
            return nif->arp[i].mac;
    return NULL;
}

void net_arp_learn(struct netif *nif, uint32_t ip, const uint8_t *mac)
{
    if (!ip || (mac[0] & 1))
        return;
    for (unsigned i = 0; i < nif->narp; i++)
        if (nif->arp[i].ip == ip) {
            memcpy(nif->arp[i].mac, mac, 6);
            return;
        }
    unsigned i = nif->narp < NET_ARP_CACHE ? nif->narp++ : nif->arp_next++ % NET_ARP_CACHE;
    nif->arp[i].ip = ip;
    memcpy(nif->arp[i].mac, mac, 6);
}

static uint8_t *eth_begin(struct netif *nif, const uint8_t *dst, uint16_t type)
{
    uint8_t *f = vnet_tx_alloc(nif->nic);
    if (!f) {
        nif->send_errors++;
        return NULL;
    }
    memcpy(f, dst, 6), memcpy(f + 6, nif->mac, 6);
    put16(f + 12, type);
    return f;
}

static int eth_send(struct netif *nif, uint8_t *f, uint32_t len, const struct virtio_net_hdr *h)
{
    if (vnet_send(nif->nic, f, len, h, true) < 0) {
        nif->send_errors++;
        return -1;
    }
    return 0;
}

int net_send_arp(struct netif *nif, uint16_t op, const uint8_t *dst, const uint8_t *tha, uint32_t tip)
{
    static const uint8_t zero[6];
    uint8_t *f = eth_begin(nif, dst ? dst : eth_broadcast, ETH_P_ARP);
    if (!f)
        return -1;
    uint8_t *a = f + ETH_HLEN;
    put16(a, 1), put16(a + 2, ETH_P_IP);
    a[4] = 6, a[5] = 4;
    put16(a + 6, op);
    memcpy(a + 8, nif->mac, 6), put32(a + 14, nif->ip);
    memcpy(a + 18, tha ? tha : zero, 6), put32(a + 24, tip);
    return eth_send(nif, f, ETH_HLEN + 28, NULL);
}

/* ---- sending IPv4 ---- */

int net_send_ip(struct netif *nif, const uint8_t *dst_mac, uint32_t src, uint32_t dst, uint8_t proto,
                const void *l4, uint32_t hlen, const void *data, uint32_t len)
{
    uint8_t mac[6];
    if (!dst_mac) {
        if (!net_resolve(nif, dst, mac, 1000000)) {
            nif->send_errors++;
            return -1;
        }
        dst_mac = mac;
    }
    uint32_t tl = IP_HLEN + hlen + len;
    if (ETH_HLEN + tl > VNET_FRAME_MAX)
        return -1;
    uint8_t *f = eth_begin(nif, dst_mac, ETH_P_IP);
    if (!f)
        return -1;
    uint8_t *ip = f + ETH_HLEN, *t = ip + IP_HLEN;
    ip[0] = 0x45, ip[1] = 0;
    put16(ip + 2, (uint16_t)tl), put16(ip + 4, nif->ip_id++), put16(ip + 6, 0x4000); /* DF */
    ip[8] = 64, ip[9] = proto;
    put16(ip + 10, 0), put32(ip + 12, src), put32(ip + 16, dst);
    put_csum(ip + 10, csum_fold(csum_add(0, ip, IP_HLEN)));
    memcpy(t, l4, hlen);
    if (len)
        memcpy(t + hlen, data, len);
    uint32_t n = hlen + len, off;
    struct virtio_net_hdr h = { 0 }, *hp = NULL;
    switch (proto) {
    case IPPROTO_UDP:
    case IPPROTO_TCP:
        off = proto == IPPROTO_UDP ? 6 : 16;
        t[off] = t[off + 1] = 0;
        if (nif->offload_tx_csum) { /* the device sums from csum_start; we give it the pseudo header */
            put_csum(t + off, (uint16_t)~csum_fold(pseudo_sum(src, dst, proto, n)));
            h.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
            h.csum_start = ETH_HLEN + IP_HLEN, h.csum_offset = (uint16_t)off;
            hp = &h;
        } else {
            uint16_t c = csum_fold(csum_add(pseudo_sum(src, dst, proto, n), t, n));
            put_csum(t + off, proto == IPPROTO_UDP && c == 0 ? 0xffff : c);
        }
        break;
    case IPPROTO_ICMP:
        t[2] = t[3] = 0;
        put_csum(t + 2, csum_fold(csum_add(0, t, n)));
        break;
    }
    return eth_send(nif, f, ETH_HLEN + tl, hp);
}

int net_send_udp(struct netif *nif, uint32_t dst, uint16_t sport, uint16_t dport, const void *data,
                 uint32_t len)
{
    uint8_t u[UDP_HLEN];
    put16(u, sport), put16(u + 2, dport), put16(u + 4, (uint16_t)(UDP_HLEN + len)), put16(u + 6, 0);
    return net_send_ip(nif, dst == 0xffffffffu ? eth_broadcast : NULL, nif->ip, dst, IPPROTO_UDP, u, UDP_HLEN,
                       data, len);
}

int net_reply_udp(struct netif *nif, const struct pkt *p, const void *data, uint32_t len)
{
    uint8_t u[UDP_HLEN];
    put16(u, p->dport), put16(u + 2, p->sport), put16(u + 4, (uint16_t)(UDP_HLEN + len)), put16(u + 6, 0);
    return net_send_ip(nif, p->src, nif->ip, p->saddr, IPPROTO_UDP, u, UDP_HLEN, data, len);
}

int net_send_icmp(struct netif *nif, uint32_t dst, uint8_t type, uint16_t id, uint16_t seq, const void *data,
                  uint32_t len)
{
    uint8_t h[ICMP_HLEN] = { type, 0, 0, 0 };
    put16(h + 4, id), put16(h + 6, seq);
    return net_send_ip(nif, NULL, nif->ip, dst, IPPROTO_ICMP, h, ICMP_HLEN, data, len);
}

int net_send_tcp(struct netif *nif, uint32_t dst, uint16_t sport, uint16_t dport, uint32_t seq, uint32_t ack,
                 uint8_t flags, const void *data, uint32_t len)
{
    uint8_t h[TCP_HLEN + 4];
    uint32_t hlen = flags & TCP_SYN ? TCP_HLEN + 4 : TCP_HLEN;
    memset(h, 0, sizeof(h));
    put16(h, sport), put16(h + 2, dport), put32(h + 4, seq), put32(h + 8, ack);
    h[12] = (uint8_t)(hlen / 4 << 4), h[13] = flags;
    put16(h + 14, 8192);
    if (flags & TCP_SYN) /* MSS 1460 */
        h[20] = 2, h[21] = 4, put16(h + 22, 1460);
    return net_send_ip(nif, NULL, nif->ip, dst, IPPROTO_TCP, h, hlen, data, len);
}

/* ---- receiving, the responder ---- */

static void respond(struct netif *nif, struct pkt *p)
{
    if (p->type == ETH_P_ARP && p->arp_op) {
        net_arp_learn(nif, p->arp_sip, p->arp_sha);
        if (p->arp_op == 1 && nif->ip && p->arp_tip == nif->ip && nif->answer_arp) {
            if (net_send_arp(nif, 2, p->src, p->arp_sha, p->arp_sip) == 0)
                nif->arp_answered++, p->answered = true;
        }
        return;
    }
    if (p->ip && p->proto == IPPROTO_ICMP && p->l4_ok && p->icmp_type == ICMP_ECHO_REQUEST && nif->ip &&
        p->daddr == nif->ip && nif->answer_ping) {
        uint8_t h[ICMP_HLEN] = { ICMP_ECHO_REPLY, 0, 0, 0 };
        put16(h + 4, p->icmp_id), put16(h + 6, p->icmp_seq);
        if (net_send_ip(nif, p->src, nif->ip, p->saddr, IPPROTO_ICMP, h, ICMP_HLEN, p->data, p->data_len) ==
            0)
            nif->ping_answered++, p->answered = true;
    }
}

bool net_input(struct netif *nif, const uint8_t *f, uint32_t len, struct pkt *p)
{
    nif->frames++;
    if (!net_parse(f, len, p)) {
        nif->bad_frames++;
        return false;
    }
    /* A partial checksum (GUEST_CSUM and NEEDS_CSUM) is not a bad one. */
    if (p->data && !p->l4_ok && (nif->nic->last_hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) &&
        virtio_has(&nif->nic->v, VIRTIO_NET_F_GUEST_CSUM))
        p->l4_ok = true, nif->rx_partial++;
    respond(nif, p);
    return true;
}

int net_poll(struct netif *nif, struct pkt *p, uint32_t timeout_us)
{
    uint64_t start = clock_us();
    for (;;) {
        const uint8_t *f;
        uint64_t spent = clock_us() - start;
        int r = vnet_recv(nif->nic, &f, spent >= timeout_us ? 0 : timeout_us - (uint32_t)spent);
        if (r == VNET_RX_BAD) {
            nif->bad_frames++;
            continue;
        }
        if (r <= 0)
            return r;
        if (net_input(nif, f, (uint32_t)r, p))
            return 1;
    }
}

void net_serve(struct netif *nif, uint32_t timeout_us)
{
    uint64_t start = clock_us();
    struct pkt p;
    for (uint64_t t; (t = clock_us() - start) < timeout_us;)
        if (net_poll(nif, &p, timeout_us - (uint32_t)t) < 0)
            return;
}

bool net_resolve(struct netif *nif, uint32_t ip, uint8_t mac[6], uint32_t timeout_us)
{
    if (ip == 0xffffffffu) {
        memcpy(mac, eth_broadcast, 6);
        return true;
    }
    uint32_t hop = nif->mask && nif->gw && (ip & nif->mask) != (nif->ip & nif->mask) ? nif->gw : ip;
    uint64_t start = clock_us(), last = 0;
    bool sent = false;
    for (;;) {
        const uint8_t *m = net_arp_lookup(nif, hop);
        if (m) {
            memcpy(mac, m, 6);
            return true;
        }
        uint64_t now = clock_us();
        if (now - start > timeout_us)
            return false;
        if (!sent || now - last > 200000) {
            net_send_arp(nif, 1, NULL, NULL, hop);
            sent = true, last = now;
        }
        struct pkt p;
        if (net_poll(nif, &p, 20000) < 0)
            return false;
    }
}

static bool expired(uint64_t start, uint32_t timeout_us)
{
    return clock_us() - start > timeout_us;
}

unsigned net_irq_probe(struct netif *nif, uint32_t peer, unsigned n)
{
    struct vnet *nic = nif->nic;
    uint8_t vec = nic->v.vec_q;
    uint8_t data[16] = { 0 };
    unsigned answered = 0;
    uint32_t before = irq_count[vec];
    for (unsigned i = 0; i < n; i++) {
        vq_arm(nic->rxq, true);
        if (net_send_icmp(nif, peer, ICMP_ECHO_REQUEST, 0x6971, (uint16_t)i, data, sizeof(data)) < 0)
            continue;
        irq_window(vec, 1000000); /* sti; hlt until the queue's vector fires */
        uint64_t start = clock_us();
        struct pkt p;
        while (!expired(start, 1000000)) {
            if (net_poll(nif, &p, 20000) < 0)
                break;
            if (p.ip && p.proto == IPPROTO_ICMP && p.icmp_type == ICMP_ECHO_REPLY && p.icmp_id == 0x6971 &&
                p.icmp_seq == i) {
                answered++;
                break;
            }
        }
    }
    vq_arm(nic->rxq, nic->v.irq);
    return answered == n ? irq_count[vec] - before : 0;
}

int net_ping(struct netif *nif, uint32_t dst, uint16_t id, uint16_t seq, const void *data, uint32_t len,
             uint32_t timeout_us)
{
    uint64_t start = clock_us();
    if (net_send_icmp(nif, dst, ICMP_ECHO_REQUEST, id, seq, data, len) < 0)
        return 0;
    struct pkt p;
    while (!expired(start, timeout_us)) {
        if (net_poll(nif, &p, 20000) < 0)
            return 0;
        if (!p.ip || p.proto != IPPROTO_ICMP || p.icmp_type != ICMP_ECHO_REPLY || p.saddr != dst ||
            p.icmp_id != id)
            continue;
        if (nif->answered && (nif->answered[p.icmp_seq / 8] & 1 << p.icmp_seq % 8))
            nif->stray_dups++;   /* this one was answered before */
        if (p.icmp_seq != seq) { /* a late (or repeated) answer to an earlier ping */
            nif->stray_replies++;
            continue;
        }
        if (nif->answered)
            nif->answered[seq / 8] |= (uint8_t)(1 << seq % 8);
        return p.l4_ok && p.data_len == len && !memcmp(p.data, data, len) ? 1 : -1;
    }
    return 0;
}

int net_tcp_probe(struct netif *nif, uint32_t dst, uint16_t dport, uint16_t sport, uint32_t timeout_us)
{
    uint32_t isn = (uint32_t)rdtsc() & 0x0fffffff;
    uint64_t start = clock_us();
    if (net_send_tcp(nif, dst, sport, dport, isn, 0, TCP_SYN, NULL, 0) < 0)
        return -1;
    struct pkt p;
    while (!expired(start, timeout_us)) {
        if (net_poll(nif, &p, 20000) < 0)
            return -1;
        if (!p.ip || p.proto != IPPROTO_TCP || !p.l4_ok || p.saddr != dst || p.sport != dport ||
            p.dport != sport)
            continue;
        if ((p.tcp_flags & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK) && p.tcp_ack == isn + 1) {
            net_send_tcp(nif, dst, sport, dport, isn + 1, 0, TCP_RST, NULL, 0);
            return 1;
        }
        if (p.tcp_flags & TCP_RST)
            return 0;
    }
    return -1;
}

/* ---- DHCP (RFC 2131 messages, RFC 2132 options) ---- */

enum { DHCP_DISCOVER = 1, DHCP_OFFER = 2, DHCP_REQUEST = 3, DHCP_ACK = 5, DHCP_NAK = 6 };
#define BOOTP_LEN  236 /* op .. file, before the magic cookie */
#define DHCP_MAGIC 0x63825363u

/* The value of option code in the options that follow the cookie (n bytes): its length in
 * *len, or NULL. */
static const uint8_t *dhcp_opt(const uint8_t *o, uint32_t n, uint8_t code, uint8_t *len)
{
    for (uint32_t i = 0; i < n;) {
        if (o[i] == 0) { /* pad */
            i++;
            continue;
        }
        if (o[i] == 255 || i + 1 >= n || i + 2 + o[i + 1] > n)
            return NULL;
        if (o[i] == code) {
            *len = o[i + 1];
            return o + i + 2;
        }
        i += 2u + o[i + 1];
    }
    return NULL;
}

static uint32_t opt_ip(const uint8_t *o, uint32_t n, uint8_t code)
{
    uint8_t len;
    const uint8_t *v = dhcp_opt(o, n, code, &len);
    return v && len >= 4 ? get32(v) : 0;
}

static int dhcp_send(struct netif *nif, uint8_t type, uint32_t xid, uint32_t req_ip, uint32_t server)
{
    static uint8_t m[BOOTP_LEN + 64];
    memset(m, 0, sizeof(m));
    m[0] = 1, m[1] = 1, m[2] = 6; /* BOOTREQUEST, Ethernet, 6-byte addresses */
    put32(m + 4, xid);
    put16(m + 10, 0x8000);       /* broadcast: we cannot take unicast before we have an address */
    memcpy(m + 28, nif->mac, 6); /* chaddr */
    put32(m + BOOTP_LEN, DHCP_MAGIC);
    uint8_t *o = m + BOOTP_LEN + 4;
    *o++ = 53, *o++ = 1, *o++ = type;
    if (req_ip)
        *o++ = 50, *o++ = 4, put32(o, req_ip), o += 4;
    if (server)
        *o++ = 54, *o++ = 4, put32(o, server), o += 4;
    *o++ = 55, *o++ = 4, *o++ = 1, *o++ = 3, *o++ = 6, *o++ = 51; /* mask, router, DNS, lease */
    *o++ = 255;
    uint32_t len = (uint32_t)(o - m);
    if (len < 300) /* BOOTP's minimum message */
        len = 300;
    uint8_t u[UDP_HLEN];
    put16(u, 68), put16(u + 2, 67), put16(u + 4, (uint16_t)(UDP_HLEN + len)), put16(u + 6, 0);
    return net_send_ip(nif, eth_broadcast, 0, 0xffffffffu, IPPROTO_UDP, u, UDP_HLEN, m, len);
}

/* Waits for a DHCP reply to xid of one of the types wanted (bitmask); returns its type or 0. */
static int dhcp_wait(struct netif *nif, uint32_t xid, unsigned wanted, uint32_t timeout_us,
                     struct dhcp_lease *l)
{
    uint64_t start = clock_us();
    struct pkt p;
    while (!expired(start, timeout_us)) {
        if (net_poll(nif, &p, 50000) < 0)
            return 0;
        if (!p.ip || p.proto != IPPROTO_UDP || !p.l4_ok || p.dport != 68 || p.sport != 67)
            continue;
        const uint8_t *m = p.data;
        if (p.data_len < BOOTP_LEN + 5 || m[0] != 2 || get32(m + 4) != xid || memcmp(m + 28, nif->mac, 6) ||
            get32(m + BOOTP_LEN) != DHCP_MAGIC)
            continue;
        const uint8_t *o = m + BOOTP_LEN + 4;
        uint32_t n = p.data_len - BOOTP_LEN - 4;
        uint8_t len;
        const uint8_t *t = dhcp_opt(o, n, 53, &len);
        if (!t || len != 1 || !(wanted & 1u << *t))
            continue;
        l->ip = get32(m + 16);
        l->mask = opt_ip(o, n, 1), l->router = opt_ip(o, n, 3), l->dns = opt_ip(o, n, 6);
        l->server = opt_ip(o, n, 54), l->lease_secs = opt_ip(o, n, 51);
        if (!l->server)
            l->server = p.saddr;
        return *t;
    }
    return 0;
}

int dhcp_run(struct netif *nif, struct dhcp_lease *lease, uint32_t timeout_us)
{
    uint32_t xid = (uint32_t)rdtsc() ^ 0x6b766d62u;
    uint64_t start = clock_us();
    struct dhcp_lease offer = { 0 };
    int t = 0;
    while (!t && !expired(start, timeout_us)) {
        dhcp_send(nif, DHCP_DISCOVER, xid, 0, 0);
        t = dhcp_wait(nif, xid, 1u << DHCP_OFFER, 2000000, &offer);
    }
    if (!t)
        return -1;
    t = 0;
    while (!t && !expired(start, timeout_us)) {
        dhcp_send(nif, DHCP_REQUEST, xid, offer.ip, offer.server);
        t = dhcp_wait(nif, xid, 1u << DHCP_ACK | 1u << DHCP_NAK, 2000000, lease);
    }
    if (t == DHCP_NAK)
        return -2;
    if (t != DHCP_ACK)
        return -1;
    nif->ip = lease->ip, nif->mask = lease->mask, nif->gw = lease->router, nif->dns = lease->dns;
    return 0;
}

/* ---- DNS (RFC 1035) ---- */

/* Skips a (possibly compressed) name at m[*i]; false if it runs out of the message. */
static bool dns_skip_name(const uint8_t *m, uint32_t n, uint32_t *i)
{
    for (unsigned labels = 0; labels < 128; labels++) {
        if (*i >= n)
            return false;
        uint8_t c = m[*i];
        if ((c & 0xc0) == 0xc0) {
            *i += 2;
            return *i <= n;
        }
        if (c & 0xc0)
            return false;
        *i += 1u + c;
        if (c == 0)
            return *i <= n;
    }
    return false;
}

int dns_query_a(struct netif *nif, uint32_t server, const char *name, uint32_t *addr, uint32_t timeout_us)
{
    uint8_t q[300];
    uint16_t id = (uint16_t)rdtsc(), sport = (uint16_t)(40000 + (id & 0x3fff));
    memset(q, 0, 12);
    put16(q, id), put16(q + 2, 0x0100), put16(q + 4, 1); /* RD; one question */
    uint32_t i = 12;
    for (const char *s = name; *s;) {
        const char *dot = s;
        while (*dot && *dot != '.')
            dot++;
        uint32_t l = (uint32_t)(dot - s);
        if (l == 0 || l > 63 || i + l + 6 > sizeof(q))
            return -3;
        q[i++] = (uint8_t)l;
        memcpy(q + i, s, l), i += l;
        s = *dot ? dot + 1 : dot;
    }
    q[i++] = 0;
    put16(q + i, 1), put16(q + i + 2, 1); /* A, IN */
    i += 4;
    uint64_t start = clock_us();
    if (net_send_udp(nif, server, sport, 53, q, i) < 0)
        return -1;
    struct pkt p;
    while (!expired(start, timeout_us)) {
        if (net_poll(nif, &p, 50000) < 0)
            return -1;
        if (!p.ip || p.proto != IPPROTO_UDP || !p.l4_ok || p.saddr != server || p.sport != 53 ||
            p.dport != sport)
            continue;
        const uint8_t *m = p.data;
        uint32_t n = p.data_len;
        if (n < 12 || get16(m) != id || !(m[2] & 0x80))
            continue;
        if (m[3] & 15)
            return m[3] & 15;
        uint32_t at = 12;
        for (unsigned k = get16(m + 4); k; k--) {
            if (!dns_skip_name(m, n, &at))
                return -3;
            at += 4;
        }
        for (unsigned k = get16(m + 6); k; k--) {
            if (!dns_skip_name(m, n, &at) || at + 10 > n)
                return -3;
            uint16_t type = get16(m + at), cls = get16(m + at + 2), rdlen = get16(m + at + 8);
            at += 10;
            if (at + rdlen > n)
                return -3;
            if (type == 1 && cls == 1 && rdlen == 4) {
                *addr = get32(m + at);
                return 0;
            }
            at += rdlen;
        }
        return -2;
    }
    return -1;
}
