"""One module per resource; each exposes `routes`, a list the app mounts."""
