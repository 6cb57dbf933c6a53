"""What every layer of the engine shares: errors, events, paths, devices, random streams, offload hooks, resources, geometry, the declared user options."""
