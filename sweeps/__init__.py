"""The Hydra config tree (a package only so it ships inside the installed distribution)."""
