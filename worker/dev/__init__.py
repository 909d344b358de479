"""Development harness: the emulator, the benchmark, the demo, an embedded Redis."""
