"""The main job, curate-and-grow: its config file and its final report."""
