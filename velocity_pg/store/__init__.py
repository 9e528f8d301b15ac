"""The backup folder: names, listing, the folder lock, manifests, retention plans."""
