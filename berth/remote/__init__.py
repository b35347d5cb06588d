"""What berth sends to hosts: stdlib only, Python 3.9+, imports nothing from berth."""
