#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/): frames of every kind
the packet path handles, and a valid example of each text format. Run from the repository."""
import json
import os
import struct

FB = b"\xffFB\xff"  # the process target's frame break
OURS = bytes([0x02, 0x70, 0x63, 0x61, 0x70, 0x00])
GW = bytes([0x02, 0, 0, 0, 0, 0xFE])
B1 = bytes([0x02, 0, 0, 0, 1, 0x0A])


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b)//2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def ip4(a):
    return bytes(int(x) for x in a.split("."))


def ip6(a):
    import ipaddress
    return ipaddress.IPv6Address(a).packed


def eth(dst, src, ethertype, payload):
    return dst + src + struct.pack("!H", ethertype) + payload


def ipv4(src, dst, proto, l4):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0x4000, 64, proto, 0, ip4(src), ip4(dst))
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return h + l4


def ipv6(src, dst, nxt, l4):
    return struct.pack("!IHBB", 0x60000000, len(l4), nxt, 64) + ip6(src) + ip6(dst) + l4


def tcp(sport, dport, flags):
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 64240, 0, 0)


def udp(sport, dport, payload=b"query"):
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def icmp4(t, code, rest):
    m = struct.pack("!BBHI", t, code, 0, 0x12340001) + rest
    return m[:2] + struct.pack("!H", csum(m)) + m[4:]


def v4(src, dst, proto, l4, dmac=OURS, smac=GW):
    return eth(dmac, smac, 0x0800, ipv4(src, dst, proto, l4))


def v6(src, dst, nxt, l4, dmac=OURS, smac=GW):
    return eth(dmac, smac, 0x86DD, ipv6(src, dst, nxt, l4))


arp = eth(b"\xff" * 6, GW, 0x0806, struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, GW, ip4("198.18.0.254"), b"\0" * 6, ip4("198.18.0.100")))
syn = v4("198.19.0.2", "198.18.0.100", 6, tcp(40000, 80, 0x02))
ack = v4("198.19.0.2", "198.18.0.100", 6, tcp(40000, 80, 0x10))
reply = v4("198.18.1.10", "198.19.0.2", 6, tcp(8080, 40000, 0x12))
query = v4("198.19.0.3", "198.18.0.100", 17, udp(5353, 53))
dr = v4("198.19.0.4", "198.18.0.101", 6, tcp(40001, 80, 0x02))
tun = v4("198.19.0.5", "198.18.0.102", 6, tcp(40002, 80, 0x02))
echo = v4("198.19.0.2", "198.18.0.100", 1, icmp4(8, 0, b"ping"))
quoted = ipv4("198.18.0.100", "198.19.0.2", 6, tcp(80, 40000, 0x12))[:28]
too_big = v4("198.19.0.9", "198.18.0.100", 1, icmp4(3, 4, quoted))
syn6 = v6("2001:db8:9::2", "2001:db8::100", 6, tcp(40000, 80, 0x02))
tun6 = v6("2001:db8:9::3", "2001:db8::101", 6, tcp(40000, 443, 0x02))
echo6 = v6("2001:db8:9::2", "2001:db8::100", 58, struct.pack("!BBHI", 128, 0, 0, 1) + b"ping")
ns = v6("2001:db8::fe", "ff02::1:ff00:1", 58, struct.pack("!BBHI", 135, 0, 0, 0) + ip6("2001:db8::1") + bytes([1, 1]) + GW)
vlan = OURS + GW + struct.pack("!HH", 0x8100, 5) + syn[12:]

out = "fuzz/corpus"
seeds = {
    "process": {
        "handshake": FB.join([syn, ack, reply, ack]),
        "udp": query,
        "arp": arp,
        "echo": FB.join([echo, echo6]),
        "modes": FB.join([dr, tun, syn6, tun6]),
        "icmp_error": FB.join([syn, too_big]),
        "ndp": ns,
        "vlan": vlan,
    },
    "config_file": {
        "shipped": open("conf/l4lb.toml", "rb").read(),
        "fuzz": open("fuzz/config.toml", "rb").read(),
        "env": open("fuzz/config.toml", "rb").read() + b"\n%%\nL4LB_DPDK__BURST=64\nL4LB_API__TOKEN=s3cret\nL4LB_DPDK__EAL_ARGS=-l 0 --no-huge\n",
    },
    "api_body": {
        "weight": b'{"backends": [{"id": "b1", "address": "198.18.1.10", "weight": 3}]}',
        "service": json.dumps({"id": "dns", "protocol": "udp", "vip": "198.18.0.53", "port": 53, "scheduler": "maglev", "forwarding": "nat", "backends": [{"id": "a", "address": "198.18.1.10", "port": 5353}]}).encode(),
        "remove": b'{"scheduler": null, "port": 443}',
    },
    "state_file": {
        "two_services": json.dumps({"format": 1, "services": [
            {"id": "web", "protocol": "tcp", "vip": "198.18.0.100", "port": 80, "scheduler": "wlc", "forwarding": "nat", "maglev_table_size": 65537,
             "backends": [{"id": "b1", "address": "198.18.1.10", "port": 8080, "weight": 1, "enabled": True}]},
            {"id": "v6", "protocol": "udp", "vip": "2001:db8::100", "port": 53, "scheduler": "maglev", "forwarding": "tun", "maglev_table_size": 65537,
             "backends": [{"id": "a", "address": "2001:db8:1::10", "port": 53, "weight": 2, "enabled": False}]}]}, indent=1).encode(),
    },
}
for target, files in seeds.items():
    os.makedirs(f"{out}/{target}", exist_ok=True)
    for name, data in files.items():
        with open(f"{out}/{target}/{name}", "wb") as f:
            f.write(data)
