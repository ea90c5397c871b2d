"""The web UI: JSON API (`api.mount_ui`), subprocess jobs, run views and the static pages.

`tunelab ui` (or `tunelab serve ui=true`) mounts it on the server; it drives the CLI in
subprocesses so a slow or crashing job never blocks the server.
"""
