"""Prints a free TCP port below the kernel's ephemeral range.

A rank that retries connecting to a port inside that range can be handed that very port as its
own source port and connect to itself: it "joins" a store that no server holds.
"""
import random
import socket

low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for port in random.sample(range(max(1024, low - 12000), low), 100):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
    print(port)
    break
else:
    raise SystemExit("error: no free TCP port below the ephemeral range")
