#!/bin/bash
# Settings the project's packetdrill scripts assume, run in the network
# namespace rawfin makes (never on the host): the receive buffer sizes of a
# classic Linux default, so the window scale offered in a SYN,ACK is 7 on any
# machine (a large machine's default maximum makes it 10), and timestamps
# and SACK as Linux has them by default.
sysctl -q net.ipv4.tcp_rmem="4096 131072 $((6*1024*1024))"
sysctl -q net.ipv4.tcp_timestamps=1 net.ipv4.tcp_sack=1 net.ipv4.tcp_window_scaling=1
sysctl -q net.ipv4.tcp_rfc1337=0
