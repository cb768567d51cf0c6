"""orchestray: an actor-model runtime for coordinating many LLMs on Ray."""
