"""How berth reaches hosts: SSH sessions, the command counter, the stdin bootstrap."""
