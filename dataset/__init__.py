"""Build side: the offline text-image dataset (needs the build extra)."""
