"""The run format: the files of a published run, the store that writes and publishes runs atomically, the reader the
explorer opens them with, and the report."""
