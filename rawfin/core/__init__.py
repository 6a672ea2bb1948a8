"""The sans-IO core: sequence arithmetic, segments, the transition table, the endpoint and the
observer. It reads no clock, opens no socket, and imports nothing from rawfin's other layers."""
