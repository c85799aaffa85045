// SPDX-License-Identifier: MIT
// The connection drain's kernel half (src/drain/mod.rs says why it exists and how it is driven).
//
// Two tc programs, attached by nginx-ha to each interface that carries a VRRP router with a drain:
//
//   drain_ingress  on the NEW holder of a VIP: a TCP packet of a flow the old holder reported
//                  (exact 4-tuple in `drain_flows`) and that is not a new connection (a bare SYN) is
//                  sent on, unchanged but for its Ethernet addresses, to the old holder's MAC, out of
//                  the interface it came in on. Everything else goes up the stack as usual, so a packet
//                  no old holder reported (a hostile one included) is handled by this node as before.
//                  On the OLD holder it drops ARP requests for a VIP it still serves as a local address
//                  (`arp_guard`), so that only the new holder answers for it, and a new connection's
//                  SYN to such a VIP (IPv4): a client whose ARP cache still names the old holder
//                  sends it again after its retransmission timeout (1 s), to the new holder by then.
//                  Accepted here instead, it could open after the old holder listed its connections
//                  and before the new holder's gratuitous ARP: the new holder, which was never told
//                  of it, would reset its next packet, and the old holder keep its dead half open
//                  until the drain window ended (seen in bench/drain.py: a 60 s planned stop).
//   drain_egress   on the OLD holder: an ARP packet whose sender address is a guarded VIP (the kernel
//                  picks the packet's source for ARP solicitations) gets the node's own address
//                  instead, so that no neighbour learns the VIP at the old holder's MAC again.
//
// Built by build.rs with clang (-target bpf); loaded with the aya crate. No helper beyond
// bpf_redirect, bpf_skb_load_bytes and the map calls, so it runs on any kernel with tc BPF (4.x
// and later). The verifier must accept it from a loader with CAP_BPF and CAP_NET_ADMIN alone, as
// the packaged unit has them (no CAP_PERFMON): every packet pointer moves by a constant only
// (a variable offset is refused, "pointer arithmetic with it prohibited for !root", by the
// Spectre v1 sanitation that CAP_PERFMON bypasses); what lies at a variable offset, the TCP
// header after IPv4 options, is copied out with bpf_skb_load_bytes (packaging/sandbox-test.sh).
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define FAMILY_V4 4
#define FAMILY_V6 6

// Layout shared with src/drain/kernel.rs (FlowKey, FlowDest): keep both in step.
struct flow_key {
    __u8 family;
    __u8 pad[3];
    __be16 client_port;
    __be16 vip_port;
    __u8 client[16];
    __u8 vip[16];
};

struct flow_dest {
    __u8 old_holder_mac[6];
    __u8 own_mac[6];
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __type(key, struct flow_key);
    __type(value, struct flow_dest);
} drain_flows SEC(".maps");

// Guarded VIP (IPv4, network order) -> the node's own address to put in its ARP packets instead.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, __be32);
    __type(value, __be32);
} arp_guard SEC(".maps");

#define STAT_FORWARDED 0
#define STAT_ARP_DROPPED 1
#define STAT_ARP_REWRITTEN 2
#define STAT_NEW_FLOW 3
#define STAT_SYN_DEFERRED 4
#define STATS 5

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, STATS);
    __type(key, __u32);
    __type(value, __u64);
} drain_stats SEC(".maps");

static __always_inline void count(__u32 stat) {
    __u64 *value = bpf_map_lookup_elem(&drain_stats, &stat);
    if (value)
        *value += 1;
}

// ARP for Ethernet and IPv4 (RFC 826), as it follows the Ethernet header.
struct arp_eth_ipv4 {
    __be16 hardware;
    __be16 protocol;
    __u8 hardware_len;
    __u8 protocol_len;
    __be16 op;
    __u8 sender_mac[6];
    __be32 sender_ip;
    __u8 target_mac[6];
    __be32 target_ip;
} __attribute__((packed));

#define ARP_REQUEST 1

static __always_inline int forward(struct __sk_buff *skb, struct ethhdr *eth, struct flow_key *key, struct tcphdr *tcp) {
    struct flow_dest *dest = bpf_map_lookup_elem(&drain_flows, key);
    if (!dest)
        return TC_ACT_OK;
    if (tcp->syn && !tcp->ack) {
        // The client reuses the 4-tuple for a new connection: it is this node's now.
        bpf_map_delete_elem(&drain_flows, key);
        count(STAT_NEW_FLOW);
        return TC_ACT_OK;
    }
    __builtin_memcpy(eth->h_dest, dest->old_holder_mac, 6);
    __builtin_memcpy(eth->h_source, dest->own_mac, 6);
    count(STAT_FORWARDED);
    return bpf_redirect(skb->ifindex, 0);
}

SEC("classifier/drain_ingress")
int drain_ingress(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return TC_ACT_OK;
    struct flow_key key = {};

    if (eth->h_proto == bpf_htons(ETH_P_ARP)) {
        struct arp_eth_ipv4 *arp = (void *)(eth + 1);
        if ((void *)(arp + 1) > data_end || arp->op != bpf_htons(ARP_REQUEST))
            return TC_ACT_OK;
        __be32 target = arp->target_ip;
        if (bpf_map_lookup_elem(&arp_guard, &target)) {
            count(STAT_ARP_DROPPED);
            return TC_ACT_SHOT;
        }
        return TC_ACT_OK;
    }

    if (eth->h_proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        if ((void *)(ip + 1) > data_end || ip->protocol != IPPROTO_TCP || ip->ihl < 5)
            return TC_ACT_OK;
        // A fragment other than the first carries no TCP header.
        if (ip->frag_off & bpf_htons(0x1fff))
            return TC_ACT_OK;
        // The TCP header follows the IPv4 options, at a variable offset: copied out by the helper
        // rather than reached by moving a packet pointer (refused without CAP_PERFMON, above).
        struct tcphdr tcp;
        if (bpf_skb_load_bytes(skb, sizeof(*eth) + ip->ihl * 4, &tcp, sizeof(tcp)) < 0)
            return TC_ACT_OK;
        if (tcp.syn && !tcp.ack) {
            __be32 vip = ip->daddr;
            if (bpf_map_lookup_elem(&arp_guard, &vip)) {
                count(STAT_SYN_DEFERRED);
                return TC_ACT_SHOT;
            }
        }
        key.family = FAMILY_V4;
        key.client_port = tcp.source;
        key.vip_port = tcp.dest;
        __builtin_memcpy(key.client, &ip->saddr, 4);
        __builtin_memcpy(key.vip, &ip->daddr, 4);
        return forward(skb, eth, &key, &tcp);
    }

    if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = (void *)(eth + 1);
        // Only TCP right after the fixed header: a flow with extension headers is left to the stack.
        if ((void *)(ip6 + 1) > data_end || ip6->nexthdr != IPPROTO_TCP)
            return TC_ACT_OK;
        struct tcphdr *tcp = (void *)(ip6 + 1);
        if ((void *)(tcp + 1) > data_end)
            return TC_ACT_OK;
        key.family = FAMILY_V6;
        key.client_port = tcp->source;
        key.vip_port = tcp->dest;
        __builtin_memcpy(key.client, &ip6->saddr, 16);
        __builtin_memcpy(key.vip, &ip6->daddr, 16);
        return forward(skb, eth, &key, tcp);
    }
    return TC_ACT_OK;
}

SEC("classifier/drain_egress")
int drain_egress(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_ARP))
        return TC_ACT_OK;
    struct arp_eth_ipv4 *arp = (void *)(eth + 1);
    if ((void *)(arp + 1) > data_end)
        return TC_ACT_OK;
    __be32 sender = arp->sender_ip;
    __be32 *own = bpf_map_lookup_elem(&arp_guard, &sender);
    if (!own)
        return TC_ACT_OK;
    if (*own == 0) {
        // No own IPv4 address to speak with: better no ARP than one that claims the VIP.
        count(STAT_ARP_DROPPED);
        return TC_ACT_SHOT;
    }
    arp->sender_ip = *own;
    count(STAT_ARP_REWRITTEN);
    return TC_ACT_OK;
}

char _license[] SEC("license") = "Dual MIT/GPL";
