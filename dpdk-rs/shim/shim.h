/* The few DPDK things bindgen cannot see: static-inline fast functions, the thread-local
 * rte_errno and function-like macros. Each wrapper is one line; the Rust side re-exports them
 * under DPDK's own names. */
#ifndef L4LB_SHIM_H
#define L4LB_SHIM_H

#include <rte_config.h>
#include <rte_common.h>
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ring.h>
#include <rte_version.h>

uint16_t l4lb_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t l4lb_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);

struct rte_mbuf *l4lb_pktmbuf_alloc(struct rte_mempool *mp);
void l4lb_pktmbuf_free(struct rte_mbuf *m);
char *l4lb_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
char *l4lb_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
char *l4lb_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
int l4lb_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
uint16_t l4lb_pktmbuf_headroom(const struct rte_mbuf *m);
uint16_t l4lb_pktmbuf_tailroom(const struct rte_mbuf *m);
void l4lb_pktmbuf_set_port(struct rte_mbuf *m, uint16_t port);
unsigned int l4lb_mempool_avail_count(const struct rte_mempool *mp);
unsigned int l4lb_mempool_in_use_count(const struct rte_mempool *mp);

unsigned int l4lb_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned int n);
unsigned int l4lb_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned int n);
unsigned int l4lb_ring_count(const struct rte_ring *r);

unsigned int l4lb_lcore_id(void);
uint64_t l4lb_rdtsc(void);
int l4lb_errno(void);

/* Function-like macros, as values. */
extern const uint64_t l4lb_eth_rss_ip;
extern const uint64_t l4lb_eth_rss_tcp;
extern const uint64_t l4lb_eth_rss_udp;
const char *l4lb_version(void);

#endif
