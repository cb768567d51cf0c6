"""Ray actors: provider actors, the batch driver and its workers, the gateway's key quota."""
