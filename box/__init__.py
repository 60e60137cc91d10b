"""The process wiring of the clinic box: the config, the `Gateway` assembly and its status, the command line,
the demo, the logs and the broker config it writes."""
