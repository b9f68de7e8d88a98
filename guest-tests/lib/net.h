/* Just enough networking for test kernels, on the virtio-net driver (vnet.h): Ethernet,
 * ARP (RFC 826) with a small cache, IPv4 (RFC 791, no options sent, no fragments), ICMP echo
 * (RFC 792), UDP (RFC 768), a DHCP client (RFC 2131/2132), a DNS A query (RFC 1035) and TCP
 * segments (RFC 793: SYN probes and the little a test server needs). Checksums are computed
 * on send and verified on receipt. While it waits for something, net_poll() answers ARP
 * requests for our address and ICMP echo requests to it.
 * IPv4 addresses are uint32_t in host order (IP4(10,0,2,15) = 0x0a00020f); ports too. */
#ifndef GT_NET_H
#define GT_NET_H

#include "vnet.h"

#define IP4(a, b, c, d)   ((uint32_t)(a) << 24 | (uint32_t)(b) << 16 | (uint32_t)(c) << 8 | (uint32_t)(d))
#define ETH_P_IP          0x0800
#define ETH_P_ARP         0x0806
#define IPPROTO_ICMP      1
#define IPPROTO_TCP       6
#define IPPROTO_UDP       17
#define ICMP_ECHO_REPLY   0
#define ICMP_ECHO_REQUEST 8
#define TCP_FIN           0x01
#define TCP_SYN           0x02
#define TCP_RST           0x04
#define TCP_PSH           0x08
#define TCP_ACK           0x10
#define ETH_HLEN          14
#define IP_HLEN           20
#define UDP_HLEN          8
#define TCP_HLEN          20
#define ICMP_HLEN         8
#define NET_ARP_CACHE     8

static inline uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}
static inline uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8), p[1] = (uint8_t)v;
}
static inline void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* A received frame taken apart. Fields of layers the frame does not have are 0. */
struct pkt {
    const uint8_t *frame;
    uint32_t len;
    const uint8_t *dst, *src; /* MAC addresses */
    uint16_t type;            /* EtherType */
    uint16_t arp_op;          /* ARP: 1 request, 2 reply */
    uint32_t arp_sip, arp_tip;
    const uint8_t *arp_sha;
    bool ip; /* an IPv4 header with a good checksum and consistent lengths */
    uint32_t saddr, daddr;
    uint8_t proto;
    bool l4_ok;            /* the UDP/TCP/ICMP header fits and its checksum verifies */
    uint16_t sport, dport; /* UDP, TCP */
    uint8_t icmp_type, icmp_code;
    uint16_t icmp_id, icmp_seq;
    uint32_t tcp_seq, tcp_ack;
    uint8_t tcp_flags;
    const uint8_t *data; /* UDP/TCP payload, ICMP echo data */
    uint32_t data_len;
    bool answered; /* net_poll() answered it (ARP request, echo request) */
};

struct netif {
    struct vnet *nic;
    uint8_t mac[6];
    uint32_t ip, mask, gw, dns; /* 0 while unknown */
    struct {
        uint32_t ip;
        uint8_t mac[6];
    } arp[NET_ARP_CACHE];
    unsigned narp, arp_next;
    bool answer_arp, answer_ping; /* the responder (both on after net_init) */
    bool offload_tx_csum;         /* UDP/TCP checksums left to the device (VIRTIO_NET_F_CSUM) */
    uint16_t ip_id;
    uint32_t arp_answered, ping_answered, frames, bad_frames, send_errors;
    uint32_t stray_replies; /* echo replies to earlier pings that came late or twice */
    uint32_t stray_dups;
    uint32_t rx_partial;
    /* frames taken with a partial checksum (GUEST_CSUM, NEEDS_CSUM) */ /* of those: answers to pings already answered (repeats) */
    uint8_t *answered; /* NULL, or 8 KiB: the echo sequence numbers answered so far */
};

extern const uint8_t eth_broadcast[6];

/* One's complement sum of len bytes (native 16-bit words, RFC 1071) added to acc. */
uint32_t csum_add(uint32_t acc, const void *p, uint32_t len);
/* Folds and complements: the value to store (as a native uint16_t) in a checksum field. */
uint16_t csum_fold(uint32_t acc);

void net_init(struct netif *nif, struct vnet *nic, uint32_t ip, uint32_t mask, uint32_t gw);
/* Parses a frame into p (false if not even Ethernet). Checksums are verified, not required:
 * see p->ip and p->l4_ok. */
bool net_parse(const uint8_t *f, uint32_t len, struct pkt *p);
/* Receives one frame into p within timeout_us, answering ARP/echo requests (p->answered)
 * and learning ARP senders. Returns 1 with a frame, 0 on timeout, or a negative
 * vnet_recv() error. */
int net_poll(struct netif *nif, struct pkt *p, uint32_t timeout_us);
/* What net_poll() does with a frame it received: parses it into p and answers it if it is an
 * ARP or echo request for us. False if it is not even Ethernet. */
bool net_input(struct netif *nif, const uint8_t *f, uint32_t len, struct pkt *p);
/* Keeps the responder running for timeout_us, dropping what it does not answer. */
void net_serve(struct netif *nif, uint32_t timeout_us);

/* The MAC of ip from the cache, or by ARP requests (one every 200 ms) within timeout_us.
 * Off-subnet addresses resolve to the gateway's MAC, 255.255.255.255 to broadcast. */
bool net_resolve(struct netif *nif, uint32_t ip, uint8_t mac[6], uint32_t timeout_us);
const uint8_t *net_arp_lookup(const struct netif *nif, uint32_t ip);
void net_arp_learn(struct netif *nif, uint32_t ip, const uint8_t *mac);
/* An ARP packet (op 1 request, 2 reply) to dst (broadcast for requests). */
int net_send_arp(struct netif *nif, uint16_t op, const uint8_t *dst, const uint8_t *tha, uint32_t tip);

/* Sends an IPv4 packet: transport header l4 (hlen bytes; its checksum field is filled here
 * for UDP, TCP and ICMP) then data; from src to dst through MAC dst_mac (NULL: resolved,
 * 1 s). Returns 0, or -1 if the MAC was not found or no tx slot was free. */
int net_send_ip(struct netif *nif, const uint8_t *dst_mac, uint32_t src, uint32_t dst, uint8_t proto,
                const void *l4, uint32_t hlen, const void *data, uint32_t len);
int net_send_udp(struct netif *nif, uint32_t dst, uint16_t sport, uint16_t dport, const void *data,
                 uint32_t len);
/* Answers the UDP datagram p: to its sender's MAC, address and port, from its destination port. */
int net_reply_udp(struct netif *nif, const struct pkt *p, const void *data, uint32_t len);
int net_send_icmp(struct netif *nif, uint32_t dst, uint8_t type, uint16_t id, uint16_t seq, const void *data,
                  uint32_t len);
/* A TCP segment (window 8192; a SYN carries an MSS option of 1460). */
int net_send_tcp(struct netif *nif, uint32_t dst, uint16_t sport, uint16_t dport, uint32_t seq, uint32_t ack,
                 uint8_t flags, const void *data, uint32_t len);

/* Pings dst once with data (len bytes): 1 when the matching reply came back with the same
 * data, 0 on timeout, -1 if a matching reply carried other data. */
int net_ping(struct netif *nif, uint32_t dst, uint16_t id, uint16_t seq, const void *data, uint32_t len,
             uint32_t timeout_us);
/* n pings to peer, each followed by a halt with interrupts on until the NIC's queue vector
 * fires (irq_window(): an emulating KVM takes pending interrupts only at hlt). Returns the
 * interrupts counted, 0 if a ping went unanswered. */
unsigned net_irq_probe(struct netif *nif, uint32_t peer, unsigned n);
/* Sends a SYN to dst:dport from sport: 1 for a SYN-ACK (answered with RST), 0 for a RST,
 * -1 on timeout. */
int net_tcp_probe(struct netif *nif, uint32_t dst, uint16_t dport, uint16_t sport, uint32_t timeout_us);

struct dhcp_lease {
    uint32_t ip, mask, router, dns, server, lease_secs;
};
/* DISCOVER, OFFER, REQUEST, ACK (broadcast, retried every 2 s) within timeout_us; on success
 * sets nif->ip/mask/gw/dns and returns 0; -1 on timeout, -2 on a NAK. */
int dhcp_run(struct netif *nif, struct dhcp_lease *lease, uint32_t timeout_us);
/* Asks server (UDP 53) for name's A record: 0 with *addr, the RCODE (> 0) of an error
 * answer, -1 on timeout, -2 for an answer without an A record, -3 for a malformed one. */
int dns_query_a(struct netif *nif, uint32_t server, const char *name, uint32_t *addr, uint32_t timeout_us);

/* "a.b.c.d" -> address; false if malformed. */
bool ip_parse(const char *s, uint32_t *ip);
/* The address as text in buf (16 bytes); returns buf. */
const char *ip_str(uint32_t ip, char *buf);
bool mac_parse(const char *s, uint8_t mac[6]);

#endif
