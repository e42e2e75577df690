"""Infrastructure without business rules: database, bus, logging, metrics, auth."""
