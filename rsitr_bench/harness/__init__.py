"""The harness: configuration, plugin host, runner, registry, downloads and the files they write.

Everything that enforces the science rules (a sealed test split, validation-only selection, declared protocols,
atomic and resumable records) lives here, and none of it knows a built-in plugin by name.
"""
