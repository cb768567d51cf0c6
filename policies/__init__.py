"""Pure decision logic: rate limiting, retry, voting, confidence, routing, search. No Ray, no SDK."""
