"""Discovery: registries as streams of ordered updates."""
