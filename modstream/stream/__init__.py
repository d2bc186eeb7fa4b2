"""The Faust shell: topics, agents, tables and metrics around the pure stages."""
