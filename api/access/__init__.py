"""Who may call the API and how often: API keys, CORS and per-client rate limits."""
