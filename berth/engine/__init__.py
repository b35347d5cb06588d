"""The generic engine: resources, plans, converge, fleets and rollouts. Knows no GitLab, PKI or CLI."""
