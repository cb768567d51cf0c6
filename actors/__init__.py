"""Ray actors: provider actors, coordinator actors and the batch driver."""
