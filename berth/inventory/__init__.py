"""Ansible-style inventories: files, groups, variables with provenance, vault, templating."""
