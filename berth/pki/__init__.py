"""berth's certificate authority and the host certificates it issues."""
