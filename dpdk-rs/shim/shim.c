#include "shim.h"

uint16_t l4lb_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) { return rte_eth_rx_burst(port, queue, pkts, n); }
uint16_t l4lb_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) { return rte_eth_tx_burst(port, queue, pkts, n); }

struct rte_mbuf *l4lb_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }
void l4lb_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
char *l4lb_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }
char *l4lb_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_prepend(m, len); }
char *l4lb_pktmbuf_adj(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_adj(m, len); }
int l4lb_pktmbuf_trim(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_trim(m, len); }
uint16_t l4lb_pktmbuf_headroom(const struct rte_mbuf *m) { return rte_pktmbuf_headroom(m); }
uint16_t l4lb_pktmbuf_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }
void l4lb_pktmbuf_set_port(struct rte_mbuf *m, uint16_t port) { m->port = port; }
unsigned int l4lb_mempool_avail_count(const struct rte_mempool *mp) { return rte_mempool_avail_count(mp); }
unsigned int l4lb_mempool_in_use_count(const struct rte_mempool *mp) { return rte_mempool_in_use_count(mp); }

unsigned int l4lb_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned int n) { return rte_ring_enqueue_burst(r, objs, n, NULL); }
unsigned int l4lb_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned int n) { return rte_ring_dequeue_burst(r, objs, n, NULL); }
unsigned int l4lb_ring_count(const struct rte_ring *r) { return rte_ring_count(r); }

unsigned int l4lb_lcore_id(void) { return rte_lcore_id(); }
uint64_t l4lb_rdtsc(void) { return rte_rdtsc(); }
int l4lb_errno(void) { return rte_errno; }

const uint64_t l4lb_eth_rss_ip = RTE_ETH_RSS_IP;
const uint64_t l4lb_eth_rss_tcp = RTE_ETH_RSS_TCP;
const uint64_t l4lb_eth_rss_udp = RTE_ETH_RSS_UDP;
const char *l4lb_version(void) { return rte_version(); }
