/* virtio-net across a guest reset, on the user-mode NAT. kvmbox rebuilds the KVM VM on a
 * reset: the NIC's MSI routes, irqfds and ioeventfds must come back on the new VM, its I/O
 * thread must let go of the old rings, and the backend must carry on.
 *
 * A virtio-blk disk with serial rw0 remembers which boot this is (sector 0: a marker and the
 * MAC seen on boot 1). Boot 1: DHCP, a ping to the gateway, then 64 ARP requests and 64
 * pings sent without waiting (their answers on their way in) and a reset through 0xCF9 at
 * once. Boot 2: the same MAC, DHCP gives the same address, the gateway answers ARP and
 * pings, frames arrive by MSI-X interrupts, the rx entries are well formed; then the marker
 * is cleared. NIC options: see vnet_setup() (irq=1 by default). */
#include "net.h"

#define MARKER 0x544f4f42454e4b56ull /* "VKNEBOOT" */

static struct blk disk;
static struct vnet nic;
static struct netif nif;
static uint8_t *sec;

static bool is_blk(const struct pci_dev *d)
{
    unsigned i;
    return blk_find(d, 1, &i, 1) == 1;
}

static bool gateway_answers(uint16_t seq)
{
    uint8_t data[56];
    for (unsigned i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i + seq);
    for (unsigned tries = 0; tries < 3; tries++)
        if (net_ping(&nif, nif.gw, 0x7262, (uint16_t)(seq + tries), data, sizeof(data), 1000000) == 1)
            return true;
    return false;
}

static bool lease(void)
{
    struct dhcp_lease l;
    char a[16];
    int r = dhcp_run(&nif, &l, 15000000);
    check(r == 0 && l.ip == IP4(10, 0, 2, 15), "DHCP: address %s (%d)", ip_str(l.ip, a), r);
    return r == 0;
}

static void first_boot(void)
{
    memset(sec, 0, 512);
    *(uint64_t *)(void *)sec = MARKER;
    memcpy(sec + 8, nic.mac, 6);
    check(blk_io(&disk, VIRTIO_BLK_T_OUT, 0, sec, 512) == VIRTIO_BLK_S_OK &&
              blk_io(&disk, VIRTIO_BLK_T_FLUSH, 0, NULL, 0) == VIRTIO_BLK_S_OK,
          "boot 1: the marker is written");
    if (!lease())
        return;
    check(gateway_answers(1), "boot 1: the gateway answers a ping");
    if (nic.v.msix_n >= 2) {
        unsigned k = net_irq_probe(&nif, nif.gw, 8);
        check(k > 0, "boot 1: 8 pings answered, their replies raise MSI-X interrupts (%u)", k);
    }
    printf("boot1 irq counts 0x30-0x33: %u %u %u %u, tick %u\n", irq_count[0x30], irq_count[0x31],
           irq_count[0x32], irq_count[0x33], irq_count[0x3f]);
    unsigned n = 0;
    uint8_t data[32] = { 0 };
    for (unsigned i = 0; i < 64; i++) {
        n += net_send_arp(&nif, 1, NULL, NULL, nif.gw) == 0;
        n += net_send_icmp(&nif, nif.gw, ICMP_ECHO_REQUEST, 0x7263, (uint16_t)i, data, sizeof(data)) == 0;
    }
    printf("boot 1: %u frames sent without waiting; resetting through 0xCF9\n", n);
    outb(0xcf9, 0x06);
    for (;;)
        hlt();
}

static void second_boot(void)
{
    pass("boot 2: the marker written before the reset is there");
    check(!memcmp(sec + 8, nic.mac, 6),
          "boot 2: the MAC is the one of boot 1 (%02x:%02x:%02x:%02x:%02x:%02x)", nic.mac[0], nic.mac[1],
          nic.mac[2], nic.mac[3], nic.mac[4], nic.mac[5]);
    if (lease()) {
        uint8_t mac[6];
        check(net_resolve(&nif, nif.gw, mac, 2000000), "boot 2: the gateway answers ARP");
        check(gateway_answers(100), "boot 2: the gateway answers a ping");
        if (nic.v.msix_n >= 2) {
            unsigned n = net_irq_probe(&nif, nif.gw, 8);
            check(n > 0, "boot 2: 8 pings answered, their replies raise MSI-X interrupts (%u)", n);
        }
    }
    check(nic.rx_bad == 0, "boot 2: the device's rx entries were well formed (%u bad%s%s)", nic.rx_bad,
          nic.bad_why ? ": " : "", nic.bad_why ? nic.bad_why : "");
    memset(sec, 0, 512);
    check(blk_io(&disk, VIRTIO_BLK_T_OUT, 0, sec, 512) == VIRTIO_BLK_S_OK, "boot 2: the marker is cleared");
}

void test_main(void)
{
    if (vnet_setup(&nic, 0))
        return;
    unsigned ndevs, idx;
    struct pci_dev *devs = vnet_pci(&ndevs);
    if (pci_relocate(devs, ndevs, is_blk, 0xc0000000u, 0xe0000000u) < 0 ||
        blk_find(devs, ndevs, &idx, 1) != 1 || blk_open(&disk, &devs[idx], 1, 0) ||
        !(sec = dma_alloc(512, 512))) {
        fail("no usable virtio-blk disk (the boot marker)");
        return;
    }
    net_init(&nif, &nic, 0, 0, 0);
    if (blk_io(&disk, VIRTIO_BLK_T_IN, 0, sec, 512) != VIRTIO_BLK_S_OK) {
        fail("reading sector 0");
        return;
    }
    if (*(uint64_t *)(void *)sec == MARKER)
        second_boot();
    else
        first_boot();
}
