"""The way out to other systems: the county uplink, the store-and-forward outboxes, the InfluxDB sink."""
