"""Stand-ins for services that cannot run in berth's test environment. See README.md in this folder."""
