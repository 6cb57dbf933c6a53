"""What every layer of the engine shares and nothing else: the declared user options (more to come)."""
