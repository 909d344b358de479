"""The scale benchmark (`tokenworker bench`, `make bench`): does one 2-core machine keep a
million Salesforce connections fresh?

    params     presets (smoke, quick, full) and command-line knobs
    services   the run's processes and temporary files, always cleaned up
    population throughput connections: emulator grants written into the store (seed)
    throughput checks/s through a real Celery worker fed by tokenworker.sweep
    ceiling    the best bare aiohttp loop against the same emulator endpoint
    profile    py-spy on the worker processes, CPU per process
    cost       calls per connection per simulated day (simemulator, workload) against the
               floor (one refresh per session lifetime), and freshness
    naive      the naive policy on the same simulated org
    storage    Redis bytes per connection, sweep cost vs stored and due
    scenarios  runs them in order; report prints the table and writes the JSON
    deployed   `--deployed`: checks/s with beat sending the sweeps, beside the pool's capacity
"""
