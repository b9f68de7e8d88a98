/* What kvmbox and its user-network helper (kvmbox-slirp, net/slirp_helper.c) say to each
 * other. They share one SOCK_SEQPACKET socketpair (the helper's end is its fd 3): every
 * message is one record whose first byte says what it is.
 *
 *   kvmbox -> helper  SLIRP_MSG_CONFIG  once, first: text lines "KEY VALUE\n"
 *                                       (hostname NAME, sandbox 0|1, hostfwd RULE...)
 *   helper -> kvmbox  SLIRP_MSG_REPLY   once, the answer: "0 DESCRIPTION" (the backend for
 *                                       `kvmbox info`, with the host ports hostfwd bound)
 *                                       or "ERRNO MESSAGE" (one line: what is wrong)
 *   both ways         SLIRP_MSG_FRAME   one Ethernet frame (no virtio-net header)
 *   helper -> kvmbox  SLIRP_MSG_LOG     one line for the host's log (libslirp's guest errors,
 *                                       the helper's sandbox violation)
 *
 * Nothing waits on the other side after the reply: a frame that finds the socket full is
 * dropped, as a busy wire would. The helper ends when kvmbox's end closes. */
#ifndef KVMBOX_SLIRP_PROTO_H
#define KVMBOX_SLIRP_PROTO_H

#define SLIRP_HELPER_NAME "kvmbox-slirp"
#define SLIRP_HELPER_FD   3

#define SLIRP_MSG_CONFIG 'C'
#define SLIRP_MSG_REPLY  'R'
#define SLIRP_MSG_FRAME  'F'
#define SLIRP_MSG_LOG    'L'

#define SLIRP_MSG_MAX    (1 + 65550) /* a type byte and the largest frame (NET_MAX_FRAME) */
#define SLIRP_SOCK_BUF   (1 << 20)   /* each end's send buffer: about 500 full-size frames */
#define SLIRP_CONFIG_MAX 4096

#endif
