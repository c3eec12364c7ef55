"""The office's live job board: every open job grouped by where its work and its money stand."""
