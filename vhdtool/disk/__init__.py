"""The virtual disk abstraction every reader produces and every consumer walks."""
