"""Guards that keep bad votes out: identity leaks, rate limits, moderation."""
