"""What every layer of the engine shares: errors, events, paths, devices, random streams, offload hooks, resources, the declared user options."""
