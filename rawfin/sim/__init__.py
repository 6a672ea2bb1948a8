"""Simulation: crafted segments, the emulator's hosts and faulty link, scenario files, replays."""
