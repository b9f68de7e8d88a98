/* virtio-net link state (virtio 1.2, 5.1.4: VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP), on the
 * user-mode NAT. The host pulls the cable and puts it back while the guest runs (kvmbox link
 * NAME 0 down|up; QEMU's monitor: set_link). The guest must be told by a configuration-change
 * interrupt, read the new status, see its frames go nowhere while the link is down, and work
 * again once it is up.
 *
 * Sequence: DHCP and a ping to the gateway with the link up; prints "LINK-WAIT down" and waits
 * (up to wait_secs, default 60) for the status to lose LINK_UP; pings the gateway, which must
 * not answer; prints "LINK-WAIT up" and waits for LINK_UP; the gateway answers again.
 * NIC options: see vnet_setup() (irq=1 by default: the wait halts between interrupts). */
#include "net.h"

static struct vnet nic;
static struct netif nif;

static bool gateway_answers(uint16_t seq, unsigned tries, uint32_t timeout_us)
{
    uint8_t data[56];
    for (unsigned i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i + seq);
    for (unsigned t = 0; t < tries; t++)
        if (net_ping(&nif, nif.gw, 0x6c6b, (uint16_t)(seq + t), data, sizeof(data), timeout_us) == 1)
            return true;
    return false;
}

static bool link_up(void)
{
    vnet_read_config(&nic);
    return nic.status & VIRTIO_NET_S_LINK_UP;
}

/* Announces the wait, then halts between interrupts until the link reads UP; returns the
 * configuration interrupts that arrived meanwhile, or -1 on timeout. */
static int wait_link(bool up, uint32_t secs)
{
    uint8_t vec = nic.v.vec_cfg;
    uint32_t before = irq_count[vec];
    printf("LINK-WAIT %s\n", up ? "up" : "down");
    uint64_t start = clock_us();
    while (link_up() != up) {
        if (clock_us() - start > (uint64_t)secs * 1000000)
            return -1;
        irq_window(vec, 100000);
    }
    /* The interrupt may trail the status (on a busy host by seconds): wait for it; the
     * 30 s only bound a device that never raises one. */
    if (irq_count[vec] == before)
        irq_window(vec, 30000000);
    return (int)(irq_count[vec] - before);
}

void test_main(void)
{
    if (vnet_setup(&nic, 0))
        return;
    uint32_t secs = (uint32_t)arg_u64("wait_secs", 60);
    net_init(&nif, &nic, 0, 0, 0);
    if (!virtio_has(&nic.v, VIRTIO_NET_F_STATUS)) {
        fail("the device does not offer VIRTIO_NET_F_STATUS");
        return;
    }
    check(link_up(), "the link is up at start (status %#x)", nic.status);
    struct dhcp_lease l;
    char a[16];
    int r = dhcp_run(&nif, &l, 15000000);
    check(r == 0, "DHCP: address %s (%d)", ip_str(l.ip, a), r);
    if (r != 0)
        return;
    check(gateway_answers(1, 3, 1000000), "link up: the gateway answers a ping");

    int irqs = wait_link(false, secs);
    if (irqs < 0) {
        fail("the link did not go down within %u s", secs);
        return;
    }
    pass("link down: the status reads %#x", nic.status);
    check(irqs > 0, "link down: the driver was told by a configuration interrupt (%d)", irqs);
    check(!gateway_answers(10, 3, 700000), "link down: the gateway does not answer (frames go nowhere)");

    irqs = wait_link(true, secs);
    if (irqs < 0) {
        fail("the link did not come back up within %u s", secs);
        return;
    }
    pass("link up again: the status reads %#x", nic.status);
    check(irqs > 0, "link up again: the driver was told by a configuration interrupt (%d)", irqs);
    check(gateway_answers(20, 5, 1000000), "link up again: the gateway answers a ping");
    check(nic.rx_bad == 0, "the device's rx entries were well formed (%u bad)", nic.rx_bad);
}
