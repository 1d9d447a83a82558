"""Built-in plugin (being written): mmstore_audio."""
