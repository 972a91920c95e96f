"""One test per attack of the hardening issue (11): each reruns the attack as it was described."""
