"""Running the service: live workers and their models, Prometheus metrics, and the results' retention."""
