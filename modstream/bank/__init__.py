"""Banks of known content: entries, their indexes per signal type, bank files, snapshots."""
