"""The job service: create jobs, read and await their state, follow them live, and make POSTs idempotent."""
