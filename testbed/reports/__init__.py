"""What a run leaves: junit, results.json, HTML, summary; merged shards."""
