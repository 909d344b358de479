"""The only package that touches Redis: records, codec, crypto, keys, leases, pipelining."""
