"""Banks synced from the industry's hash exchanges through python-threatexchange."""
