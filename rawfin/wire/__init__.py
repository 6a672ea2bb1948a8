"""Wire formats: link-layer decoding, the Scapy codec, pcap and pcapng reading and writing."""
