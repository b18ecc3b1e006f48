"""Docker for the container providers: ``cli`` (the docker CLI against one engine), ``nodes`` (the base of
providers whose nodes are containers) and ``engine`` (the project's own dockerd in its network namespace)."""
