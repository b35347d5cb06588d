"""Docker Engine knowledge: daemon.json keys and dockerd's listeners, as moby reads them."""
